//! Messages out of frames: the fragment sequence rules (§5.4), the message
//! size limit across fragments, and reassembly where a message must be seen
//! whole before it may go on.

use bytes::BytesMut;

use super::frame::{Frame, Opcode, ProtocolError, MAX_MESSAGE};

/// Where a data frame sits in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// The message's kind: [`Opcode::Text`] or [`Opcode::Binary`].
    pub(crate) kind: Opcode,
    /// The frame starts the message.
    pub(crate) first: bool,
    /// The frame ends the message.
    pub(crate) last: bool,
}

/// Follows the data frames of one direction: which message they belong to
/// and how long it has grown.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    /// The unfinished message's kind and length so far.
    open: Option<(Opcode, usize)>,
}

impl Sequence {
    /// Places a data frame (text, binary or continuation) of `len` bytes;
    /// control frames may come between fragments and are not passed here.
    pub(crate) fn place(
        &mut self,
        fin: bool,
        opcode: Opcode,
        len: usize,
    ) -> Result<Fragment, ProtocolError> {
        let (kind, so_far, first) = match (opcode, self.open) {
            (Opcode::Continuation, None) => return Err(ProtocolError::ContinuationWithoutStart),
            (Opcode::Continuation, Some((kind, so_far))) => (kind, so_far, false),
            (_, Some(_)) => return Err(ProtocolError::MessageInterleaved),
            (kind, None) => (kind, 0, true),
        };
        let total = so_far.saturating_add(len);
        if total > MAX_MESSAGE {
            return Err(ProtocolError::TooBig);
        }
        self.open = (!fin).then_some((kind, total));
        Ok(Fragment {
            kind,
            first,
            last: fin,
        })
    }

    /// How many more payload bytes the current message may take.
    pub(crate) fn room(&self) -> usize {
        MAX_MESSAGE - self.open.map_or(0, |(_, so_far)| so_far)
    }
}

/// Collects the fragments of each message into the whole message.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    sequence: Sequence,
    buffer: BytesMut,
}

impl Reassembler {
    /// How many more payload bytes the current message may take: the
    /// decoder refuses a longer frame before buffering it.
    pub(crate) fn room(&self) -> usize {
        self.sequence.room()
    }

    /// Adds a data frame; returns the message's kind and its whole payload
    /// when the frame ends it.
    pub(crate) fn push(
        &mut self,
        frame: Frame,
    ) -> Result<Option<(Opcode, BytesMut)>, ProtocolError> {
        let place = self
            .sequence
            .place(frame.fin, frame.opcode, frame.payload.len())?;
        if place.first && place.last {
            return Ok(Some((place.kind, frame.payload)));
        }
        self.buffer.extend_from_slice(&frame.payload);
        if !place.last {
            return Ok(None);
        }
        Ok(Some((place.kind, std::mem::take(&mut self.buffer))))
    }
}

impl Drop for Reassembler {
    fn drop(&mut self) {
        // An unfinished message may hold part of a secret the agent sent.
        self.buffer.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Frame {
        Frame {
            fin,
            opcode,
            payload: BytesMut::from(payload),
        }
    }

    #[test]
    fn fragments_are_placed_and_reassembled_in_order() {
        let mut r = Reassembler::default();
        assert_eq!(r.push(frame(false, Opcode::Text, b"he")).unwrap(), None);
        assert_eq!(
            r.push(frame(false, Opcode::Continuation, b"ll")).unwrap(),
            None
        );
        let (kind, whole) = r
            .push(frame(true, Opcode::Continuation, b"o"))
            .unwrap()
            .unwrap();
        assert_eq!(kind, Opcode::Text);
        assert_eq!(&whole[..], b"hello");
        // The next message starts afresh.
        let (kind, whole) = r
            .push(frame(true, Opcode::Binary, b"\x00\x01"))
            .unwrap()
            .unwrap();
        assert_eq!(kind, Opcode::Binary);
        assert_eq!(&whole[..], b"\x00\x01");
    }

    #[test]
    fn a_continuation_needs_a_start_and_a_start_needs_the_previous_end() {
        let mut s = Sequence::default();
        assert_eq!(
            s.place(true, Opcode::Continuation, 1),
            Err(ProtocolError::ContinuationWithoutStart)
        );
        let first = s.place(false, Opcode::Binary, 1).unwrap();
        assert!(first.first && !first.last);
        assert_eq!(
            s.place(true, Opcode::Text, 1),
            Err(ProtocolError::MessageInterleaved)
        );
        let last = s.place(true, Opcode::Continuation, 1).unwrap();
        assert_eq!(
            last,
            Fragment {
                kind: Opcode::Binary,
                first: false,
                last: true
            }
        );
    }

    #[test]
    fn a_message_too_big_across_fragments_is_refused() {
        let mut s = Sequence::default();
        s.place(false, Opcode::Binary, MAX_MESSAGE - 10).unwrap();
        assert_eq!(s.room(), 10);
        assert_eq!(
            s.place(true, Opcode::Continuation, 11),
            Err(ProtocolError::TooBig)
        );
        assert_eq!(ProtocolError::TooBig.close_code(), 1009);
    }
}
