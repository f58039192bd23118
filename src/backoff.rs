//! PLACEHOLDER: replaced by wt-codec.
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
    pub jitter: f64,
}
impl Backoff {
    pub fn delay_ms(&self, _attempt: u32, _rng: &mut impl rand::Rng) -> u64 {
        unimplemented!()
    }
}
