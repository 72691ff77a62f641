//! The trace hash that proves a seed replays exactly: FNV-1a over the run's
//! history, written out as text (stable across runs and platforms, unlike
//! `std`'s randomly keyed hasher).

/// FNV-1a, 64 bits.
pub struct TraceHash(u64);

impl TraceHash {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }

    /// Adds one line of history.
    pub fn add(&mut self, line: &str) {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}
