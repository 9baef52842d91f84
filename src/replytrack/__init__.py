"""replytrack: email reply tracking for sales platforms.

Give every send a unique, optionally signed Message-ID, parse incoming mail's headers, and match
replies to the sends they answer through ``In-Reply-To`` / ``References``. Everything public is
importable from here; the modules behind it are an implementation detail unless documented.
"""

from replytrack.classify import Classification, Kind, classify
from replytrack.conversation import Thread, thread_messages
from replytrack.correlate import Correlation, Correlator, MatchMethod, Role
from replytrack.dns import MailRoute, Provider, ProviderDetector, ProviderInfo, detect_provider
from replytrack.dsn import Bounce, BouncedRecipient
from replytrack.errors import (
    ConfigError,
    DNSError,
    HookError,
    ParseError,
    ReplytrackError,
    SourceError,
    StoreError,
)
from replytrack.events import Action, ReplyEvent
from replytrack.headers import (
    Address,
    Headers,
    decode_encoded_words,
    normalize_msg_id,
    normalize_subject,
    parse_address,
    parse_addresses,
    parse_headers,
    parse_msg_id,
    parse_msg_ids,
)
from replytrack.hooks import CampaignStopHook, CRMLogHook
from replytrack.msgid import MessageIdGenerator, Token
from replytrack.policy import Decision, Policy, Scope
from replytrack.store import MemoryStore, SentMessage, SQLiteStore, Store
from replytrack.threadindex import ThreadIndex
from replytrack.tracker import LearnResult, PollResult, ReplyTracker, RetryResult
from replytrack.worker import RoundResult, Worker

__version__ = "0.1.0.dev0"

__all__ = [
    "Action",
    "Address",
    "Bounce",
    "BouncedRecipient",
    "CRMLogHook",
    "CampaignStopHook",
    "Classification",
    "ConfigError",
    "Correlation",
    "Correlator",
    "DNSError",
    "Decision",
    "Headers",
    "HookError",
    "Kind",
    "LearnResult",
    "MailRoute",
    "MatchMethod",
    "MemoryStore",
    "MessageIdGenerator",
    "ParseError",
    "Policy",
    "PollResult",
    "Provider",
    "ProviderDetector",
    "ProviderInfo",
    "ReplyEvent",
    "ReplyTracker",
    "ReplytrackError",
    "RetryResult",
    "Role",
    "RoundResult",
    "SQLiteStore",
    "Scope",
    "SentMessage",
    "SourceError",
    "Store",
    "StoreError",
    "Thread",
    "ThreadIndex",
    "Token",
    "Worker",
    "classify",
    "decode_encoded_words",
    "detect_provider",
    "normalize_msg_id",
    "normalize_subject",
    "parse_address",
    "parse_addresses",
    "parse_headers",
    "parse_msg_id",
    "parse_msg_ids",
    "thread_messages",
]
