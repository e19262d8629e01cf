//! `br`, on the pure-Rust brotli-decompressor.

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};

use super::{Coding, DecodeError, Stage, PIECE};

/// A brotli decoder.
pub(super) struct Brotli {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    started: bool,
    done: bool,
}

impl Brotli {
    /// A decoder for one brotli stream. Strict: the large-window extension
    /// (windows up to 1 GiB) is not part of `br` (RFC 7932 caps the window
    /// at 16 MiB), and would let a response claim that much memory.
    pub(super) fn new() -> Self {
        Brotli {
            state: BrotliState::new_strict(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ),
            started: false,
            done: false,
        }
    }
}

impl Stage for Brotli {
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        if self.done {
            if input.is_empty() {
                return Ok(0);
            }
            return Err(DecodeError::corrupt(
                Coding::Brotli,
                "data follows the end of the compressed stream",
            ));
        }
        self.started |= !input.is_empty();
        out.resize(PIECE, 0);
        let (mut available_in, mut input_offset) = (input.len(), 0);
        let (mut available_out, mut output_offset, mut total_out) = (PIECE, 0, 0);
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut input_offset,
            input,
            &mut available_out,
            &mut output_offset,
            out,
            &mut total_out,
            &mut self.state,
        );
        out.truncate(output_offset);
        match result {
            BrotliResult::ResultFailure => Err(DecodeError::corrupt(
                Coding::Brotli,
                "the brotli stream is invalid",
            )),
            BrotliResult::ResultSuccess => {
                self.done = true;
                Ok(input_offset)
            }
            BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => Ok(input_offset),
        }
    }

    fn complete(&self) -> bool {
        self.done || !self.started
    }

    fn coding(&self) -> Coding {
        Coding::Brotli
    }
}
