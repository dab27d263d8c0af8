//! A small seeded pseudo-random number generator, std only.
//!
//! [`SplitMix64`] expands a 64-bit seed into well-mixed words (and is used to
//! derive independent sub-seeds), [`Xoshiro256StarStar`] is the generator
//! proper, and [`Xoshiro256StarStar::gaussian`] draws standard normal values
//! with the Box–Muller transform.
//!
//! Both algorithms are the public-domain reference algorithms by Sebastiano
//! Vigna and David Blackman (<https://prng.di.unimi.it/>); the output for a
//! given seed is fixed forever, so synthetic recordings are reproducible
//! across versions and platforms.

/// SplitMix64: a tiny generator used to seed others and to hash seeds.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a sub-seed from a seed and a list of integers (stream id, channel
/// index, purpose tag...). Different paths give unrelated seeds.
pub fn derive_seed(seed: u64, path: &[u64]) -> u64 {
    let mut h = mix64(seed ^ 0x6A09_E667_F3BC_C908);
    for &p in path {
        h = mix64(h ^ mix64(p.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    }
    h
}

/// xoshiro256**: fast, 256 bits of state, passes BigCrush.
///
/// Also keeps the spare value of the last Box–Muller pair so that every
/// `gaussian()` call consumes the stream in the same, reproducible way.
#[derive(Debug, Clone)]
pub struct Xoshiro256StarStar {
    s: [u64; 4],
    spare_gaussian: Option<f64>,
}

impl Xoshiro256StarStar {
    /// Seeds the 256-bit state from a 64-bit seed through SplitMix64, as the
    /// reference implementation recommends (the state is never all zero).
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        let s = [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()];
        Self { s, spare_gaussian: None }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: never zero, so safe for `ln`.
    pub fn next_f64_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (mean 0, variance 1) by the Box–Muller transform;
    /// values come in pairs, the second is returned by the next call.
    pub fn gaussian(&mut self) -> f64 {
        if let Some(g) = self.spare_gaussian.take() {
            return g;
        }
        let u1 = self.next_f64_open0();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        let (s, c) = theta.sin_cos();
        self.spare_gaussian = Some(r * s);
        r * c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation).
        let mut sm = SplitMix64::new(0);
        assert_eq!(sm.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(sm.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(sm.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn xoshiro_reference_values() {
        // xoshiro256** with state [1, 2, 3, 4]: reference outputs.
        let mut x = Xoshiro256StarStar { s: [1, 2, 3, 4], spare_gaussian: None };
        assert_eq!(x.next_u64(), 11520);
        assert_eq!(x.next_u64(), 0);
        assert_eq!(x.next_u64(), 1509978240);
        assert_eq!(x.next_u64(), 1215971899390074240);
    }

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = Xoshiro256StarStar::seed_from_u64(7);
        let mut b = Xoshiro256StarStar::seed_from_u64(7);
        let mut c = Xoshiro256StarStar::seed_from_u64(8);
        let va: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn uniform_range_and_mean() {
        let mut x = Xoshiro256StarStar::seed_from_u64(42);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = x.next_f64();
            assert!((0.0..1.0).contains(&u));
            let v = x.next_f64_open0();
            assert!(v > 0.0 && v <= 1.0);
            sum += u;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn gaussian_moments() {
        let mut x = Xoshiro256StarStar::seed_from_u64(3);
        let n = 200_000;
        let (mut s1, mut s2, mut s4) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let g = x.gaussian();
            s1 += g;
            s2 += g * g;
            s4 += g * g * g * g;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        let kurt = s4 / n as f64 / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
    }

    #[test]
    fn derived_seeds_differ() {
        let a = derive_seed(1, &[0, 0]);
        let b = derive_seed(1, &[0, 1]);
        let c = derive_seed(1, &[1, 0]);
        let d = derive_seed(2, &[0, 0]);
        assert!(a != b && a != c && b != c && a != d);
        assert_eq!(a, derive_seed(1, &[0, 0]));
    }
}
