//! Helpers shared by the library's unit tests (compiled only for them).

/// A deterministic xorshift64 byte source: cheap fuzz input for "never
/// panics on any bytes" tests, the same bytes on every run.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next `len` bytes (the state carries over between calls).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}
