"""Stamp an outgoing email with a signed Message-ID, then recognise the reply to it.

Run it with ``python examples/match_a_reply.py``. No mailbox or store is needed: the signed
token carries the host's ref, so the reply is recognised from its headers alone, even though it
comes from a colleague of the prospect who was only on Cc.
"""

from __future__ import annotations

import email.policy
import os
from email.message import EmailMessage

from replytrack import MessageIdGenerator, parse_headers

# In production the secret comes from your secret store; rotate by appending a new key.
generator = MessageIdGenerator("mail.sales.example", secret=os.urandom(32))

# Python's default policy folds long In-Reply-To/References values into RFC 2047
# encoded-words, which many mail systems then fail to thread; allow RFC 5322's 998 instead.
POLICY = email.policy.SMTP.clone(max_line_length=998)

# 1. The sales platform sends step 1 of campaign 42 to prospect 7.
outgoing = EmailMessage(policy=POLICY)
outgoing["From"] = "Rep <rep@sales.example>"
outgoing["To"] = "Dana <dana@customer.example>"
outgoing["Cc"] = "Sam <sam@customer.example>"
outgoing["Subject"] = "Quick question"
outgoing["Message-ID"] = generator.generate(ref="c42:p7")
outgoing.set_content("Hi Dana, ...")

# 2. Sam, who was only on Cc, answers from his phone.
reply = EmailMessage(policy=POLICY)
reply["From"] = "Sam <sam@customer.example>"
reply["To"] = "Rep <rep@sales.example>"
reply["Subject"] = "RE: Quick question"
reply["Message-ID"] = "<CAF=reply.1@mail.gmail.com>"
reply["In-Reply-To"] = outgoing["Message-ID"]
reply["References"] = outgoing["Message-ID"]
reply.set_content("Dana is out this week; happy to talk.")

# 3. replytrack reads the reply's headers and finds the send it answers.
headers = parse_headers(reply.as_bytes())
for referenced in (*headers.in_reply_to, *reversed(headers.references)):
    token = generator.verify(referenced)
    if token is not None:
        print(f"reply from {headers.from_[0].addr} answers send {token.ref!r}")
        print(f"  sent at {token.issued_at:%Y-%m-%d %H:%M} UTC, subject {headers.subject!r}")
        break
else:
    print("not a reply to one of our sends")
