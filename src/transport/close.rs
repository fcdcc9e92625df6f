//! The closing handshake (RFC 6455 7.1) as one state machine, the same for both roles.

use crate::protocol::CloseReason;

/// Where a connection is in its closing handshake.
///
/// Every change goes through one of the transitions below; the server's engine and the
/// client read the state instead of keeping flags of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseState {
    /// Messages flow both ways.
    Open,
    /// Our close frame is written (or queued to be), for this reason; the peer's has not
    /// arrived yet. Nothing but control frames may follow ours.
    ClosingByUs(CloseReason),
    /// The peer's close frame arrived, and our answer is queued behind whatever was
    /// already written: the handshake is complete once it is out.
    ClosingByPeer(CloseReason),
    /// Both close frames went through, or the socket is gone.
    Closed(CloseReason),
}

/// What the connection must do after the peer's close frame arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerClose {
    /// Answer with a close frame echoing this code (`None`: an empty close frame).
    Answer(Option<u16>),
    /// Ours went first: the handshake is complete, nothing more to send.
    Complete,
}

impl CloseState {
    /// Whether messages may still be sent.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self, CloseState::Open)
    }

    /// Why the connection is closing or closed, once it is.
    pub(crate) fn reason(&self) -> Option<&CloseReason> {
        match self {
            CloseState::Open => None,
            CloseState::ClosingByUs(reason)
            | CloseState::ClosingByPeer(reason)
            | CloseState::Closed(reason) => Some(reason),
        }
    }

    /// We close for `reason`: true if this starts the handshake (the caller then sends
    /// the close frame), false if it was under way already.
    pub(crate) fn close(&mut self, reason: CloseReason) -> bool {
        if !self.is_open() {
            return false;
        }
        *self = CloseState::ClosingByUs(reason);
        true
    }

    /// The peer's close frame arrived with `code` (none when it carried none) and
    /// `text`.
    pub(crate) fn peer_closed(&mut self, code: Option<u16>, text: String) -> PeerClose {
        match std::mem::replace(self, CloseState::Open) {
            CloseState::Open => {
                *self = CloseState::ClosingByPeer(CloseReason::Remote {
                    code: code.unwrap_or(crate::protocol::close_code::STATUS),
                    reason: text,
                });
                PeerClose::Answer(code)
            }
            CloseState::ClosingByUs(reason) | CloseState::ClosingByPeer(reason) => {
                *self = CloseState::Closed(reason);
                PeerClose::Complete
            }
            closed @ CloseState::Closed(_) => {
                *self = closed;
                PeerClose::Complete
            }
        }
    }

    /// The connection is over: the reason it was closing for, or `lost` if it was open.
    pub(crate) fn finish(&mut self, lost: CloseReason) -> CloseReason {
        let reason = match std::mem::replace(self, CloseState::Open) {
            CloseState::Open => lost,
            CloseState::ClosingByUs(reason)
            | CloseState::ClosingByPeer(reason)
            | CloseState::Closed(reason) => reason,
        };
        *self = CloseState::Closed(reason.clone());
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::close_code;

    #[test]
    fn our_close_then_theirs_completes_without_an_answer() {
        let mut state = CloseState::Open;
        assert!(state.close(CloseReason::Idle));
        assert!(!state.is_open());
        assert!(
            !state.close(CloseReason::MaxAge),
            "only the first close counts"
        );
        assert_eq!(
            state.peer_closed(Some(1000), String::new()),
            PeerClose::Complete
        );
        assert_eq!(state, CloseState::Closed(CloseReason::Idle));
        assert_eq!(state.finish(CloseReason::ConnectionLost), CloseReason::Idle);
    }

    #[test]
    fn their_close_is_answered_with_its_code() {
        let mut state = CloseState::Open;
        assert_eq!(
            state.peer_closed(Some(4000), "bye".into()),
            PeerClose::Answer(Some(4000))
        );
        let remote = CloseReason::Remote {
            code: 4000,
            reason: "bye".into(),
        };
        assert_eq!(state.reason(), Some(&remote));
        assert!(
            !state.close(CloseReason::Shutdown),
            "the peer's close came first"
        );
        assert_eq!(state.finish(CloseReason::ConnectionLost), remote);
    }

    #[test]
    fn an_empty_close_is_answered_empty_and_reported_as_1005() {
        let mut state = CloseState::Open;
        assert_eq!(
            state.peer_closed(None, String::new()),
            PeerClose::Answer(None)
        );
        assert_eq!(
            state.reason().map(CloseReason::code),
            Some(close_code::STATUS)
        );
    }

    #[test]
    fn a_socket_lost_while_open_ends_as_lost() {
        let mut state = CloseState::Open;
        assert_eq!(
            state.finish(CloseReason::ConnectionLost),
            CloseReason::ConnectionLost
        );
        assert!(!state.close(CloseReason::Idle));
    }
}
