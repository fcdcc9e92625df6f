//! Close codes, close reasons, and the one place that maps why a connection ended to the
//! close code its peer sees.

use std::fmt;

/// Close codes by name (RFC 6455 7.4.1 and the IANA registry), for `Conn::close` and for
/// matching what a peer sent.
///
/// ```
/// use estuary::close_code;
///
/// assert_eq!(close_code::NORMAL, 1000);
/// assert_eq!(close_code::POLICY, 1008);
/// ```
pub mod close_code {
    /// The purpose the connection was made for is fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away: a server shutting down, a browser leaving the page.
    pub const AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// The peer sent a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// No status code was present (never sent on the wire).
    pub const STATUS: u16 = 1005;
    /// The connection closed without a close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// A message's data did not match its type: invalid UTF-8 in a text message.
    pub const INVALID: u16 = 1007;
    /// The peer broke a policy: a rate limit, a slow consumer.
    pub const POLICY: u16 = 1008;
    /// A message was too big to process.
    pub const SIZE: u16 = 1009;
    /// The client expected an extension the server did not negotiate.
    pub const EXTENSION: u16 = 1010;
    /// The server hit an unexpected condition (a handler panicked).
    pub const ERROR: u16 = 1011;
    /// The server is restarting.
    pub const RESTART: u16 = 1012;
    /// The server is overloaded: try again later.
    pub const AGAIN: u16 = 1013;
}

/// The largest close reason, in bytes: a control frame carries at most 125 bytes, two of
/// which are the code.
///
/// ```
/// use estuary::MAX_CLOSE_REASON;
///
/// // A reason of the application's own, cut to fit at a character boundary.
/// let reason = "the server is moving to another continent ".repeat(4);
/// let mut end = MAX_CLOSE_REASON.min(reason.len());
/// while !reason.is_char_boundary(end) {
///     end -= 1;
/// }
/// assert_eq!(reason[..end].len(), MAX_CLOSE_REASON);
/// ```
pub const MAX_CLOSE_REASON: usize = 123;

/// Why a connection ended, as the handler's `on_close` sees it.
///
/// [`CloseReason::code`] is the close code the engine sent (or received) for it.
///
/// ```
/// use estuary::CloseReason;
///
/// let reason = CloseReason::Remote { code: 1000, reason: "bye".into() };
/// assert_eq!(reason.code(), 1000);
/// assert_eq!(CloseReason::Shutdown.code(), 1001);
/// assert_eq!(CloseReason::RateLimited.code(), 1008);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent a close frame (code 1005 when it carried none).
    Remote {
        /// The peer's close code.
        code: u16,
        /// The peer's close reason.
        reason: String,
    },
    /// The handler called `Conn::close`.
    Local {
        /// The code the handler chose.
        code: u16,
        /// The reason the handler gave.
        reason: String,
    },
    /// Nothing arrived from the peer within the idle timeout, or a keep-alive ping went
    /// unanswered.
    Idle,
    /// The connection reached its max age.
    MaxAge,
    /// The peer sent frames faster than its message rate allows.
    RateLimited,
    /// The peer sent a message larger than the max message size.
    MessageTooBig,
    /// The peer did not read fast enough and its outbound queue filled up.
    SlowConsumer,
    /// The peer broke RFC 6455.
    Protocol(ProtocolError),
    /// The server is shutting down.
    Shutdown,
    /// The handler panicked.
    HandlerPanic,
    /// The socket closed or failed without a close handshake.
    ConnectionLost,
}

impl CloseReason {
    /// The close code that goes with this reason.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Remote { code, .. } | CloseReason::Local { code, .. } => *code,
            CloseReason::Idle => close_code::NORMAL,
            CloseReason::MaxAge | CloseReason::Shutdown => close_code::AWAY,
            CloseReason::RateLimited | CloseReason::SlowConsumer => close_code::POLICY,
            CloseReason::MessageTooBig => close_code::SIZE,
            CloseReason::Protocol(e) => e.code(),
            CloseReason::HandlerPanic => close_code::ERROR,
            CloseReason::ConnectionLost => close_code::ABNORMAL,
        }
    }

    /// The close reason text that goes with this reason on the wire.
    pub fn text(&self) -> &str {
        match self {
            CloseReason::Remote { reason, .. } | CloseReason::Local { reason, .. } => reason,
            CloseReason::Idle => "idle timeout",
            CloseReason::MaxAge => "max connection age reached",
            CloseReason::RateLimited => "message rate limit exceeded",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::Protocol(e) => e.text(),
            CloseReason::Shutdown => "going away",
            CloseReason::HandlerPanic => "internal error",
            CloseReason::ConnectionLost => "connection lost",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text(), self.code())
    }
}

/// A violation of RFC 6455 by the peer; the engine closes with 1002 or 1007.
///
/// The handler's `on_close` learns which, as [`CloseReason::Protocol`]:
///
/// ```
/// use estuary::{CloseReason, Conn, Handler, Message, ProtocolError};
///
/// #[derive(Clone)]
/// struct Watch;
///
/// impl Handler for Watch {
///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
///
///     async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
///         if let CloseReason::Protocol(ProtocolError::UnmaskedFrame) = reason {
///             tracing::warn!("a client that does not mask: a proxy in the way?");
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set without a negotiated extension (RSV1 is permessage-deflate's).
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode(u8),
    /// A client frame without a mask.
    UnmaskedFrame,
    /// A server frame with a mask.
    MaskedFrame,
    /// A control frame with FIN unset.
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    ControlTooLong,
    /// A 64-bit length with the most significant bit set.
    InvalidLength,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// A close frame whose payload is one byte long.
    CloseTooShort,
    /// A close code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// Invalid UTF-8 in a text message (close 1007).
    InvalidUtf8,
    /// Invalid UTF-8 in a close reason (close 1007).
    InvalidCloseReason,
    /// RSV1 (compression) set on a control frame.
    CompressedControl,
    /// RSV1 (compression) set on a continuation frame: only a message's first frame says
    /// it is compressed.
    CompressedContinuation,
    /// A compressed message that is not valid deflate data.
    InvalidCompressedData,
}

impl ProtocolError {
    /// 1007 for bad UTF-8, 1002 for everything else.
    pub fn code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => close_code::INVALID,
            _ => close_code::PROTOCOL,
        }
    }

    /// A short description, used as the close reason.
    pub fn text(&self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set without an extension",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::UnmaskedFrame => "client frames must be masked",
            ProtocolError::MaskedFrame => "server frames must not be masked",
            ProtocolError::FragmentedControl => "control frames must not be fragmented",
            ProtocolError::ControlTooLong => "control frame payload over 125 bytes",
            ProtocolError::InvalidLength => "payload length has its top bit set",
            ProtocolError::UnexpectedContinuation => "continuation frame without a message",
            ProtocolError::ExpectedContinuation => "new message before the last one finished",
            ProtocolError::CloseTooShort => "close frame payload of 1 byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid UTF-8 in text message",
            ProtocolError::InvalidCloseReason => "invalid UTF-8 in close reason",
            ProtocolError::CompressedControl => "control frames must not be compressed",
            ProtocolError::CompressedContinuation => "RSV1 set on a continuation frame",
            ProtocolError::InvalidCompressedData => "invalid deflate data in message",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.text()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A close code or reason that `Conn::close` refuses to send.
///
/// ```
/// use estuary::CloseError;
///
/// assert_eq!(
///     CloseError::InvalidCode(1005).to_string(),
///     "close code 1005 may not be sent: use 1000-1003, 1007-1014 or 3000-4999",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseError {
    /// The code is reserved, unassigned, or only for local use (1005, 1006, 1015).
    InvalidCode(u16),
    /// The reason is longer than 123 bytes.
    ReasonTooLong(usize),
    /// The connection is already closing.
    AlreadyClosing,
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseError::InvalidCode(code) => write!(
                f,
                "close code {code} may not be sent: use 1000-1003, 1007-1014 or 3000-4999"
            ),
            CloseError::ReasonTooLong(len) => write!(
                f,
                "close reason is {len} bytes; at most {MAX_CLOSE_REASON} fit in a close frame"
            ),
            CloseError::AlreadyClosing => f.write_str("the connection is already closing"),
        }
    }
}

impl std::error::Error for CloseError {}

/// Whether `code` may appear in a close frame on the wire (RFC 6455 7.4 and the IANA
/// registry: 1012-1014 were registered after the RFC).
pub(crate) fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a code and reason the application wants to send.
pub(crate) fn validate_outgoing(code: u16, reason: &str) -> Result<(), CloseError> {
    if !is_valid_wire_code(code) {
        return Err(CloseError::InvalidCode(code));
    }
    if reason.len() > MAX_CLOSE_REASON {
        return Err(CloseError::ReasonTooLong(reason.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_match_the_registry() {
        for code in [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            assert!(is_valid_wire_code(code), "{code} is valid");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            assert!(!is_valid_wire_code(code), "{code} is invalid");
        }
    }

    #[test]
    fn outgoing_reason_longer_than_a_control_frame_is_refused() {
        assert_eq!(validate_outgoing(1000, &"x".repeat(123)), Ok(()));
        assert_eq!(
            validate_outgoing(1000, &"x".repeat(124)),
            Err(CloseError::ReasonTooLong(124))
        );
    }

    #[test]
    fn every_reason_text_fits_in_a_close_frame() {
        let reasons = [
            CloseReason::Idle,
            CloseReason::MaxAge,
            CloseReason::RateLimited,
            CloseReason::MessageTooBig,
            CloseReason::SlowConsumer,
            CloseReason::Shutdown,
            CloseReason::HandlerPanic,
            CloseReason::Protocol(ProtocolError::ExpectedContinuation),
        ];
        for r in reasons {
            assert!(validate_outgoing(r.code(), r.text()).is_ok(), "{r}");
        }
    }
}
