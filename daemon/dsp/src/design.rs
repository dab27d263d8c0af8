//! IIR filter design as second-order sections, reproducing `scipy.signal` (1.17) step by step so
//! that the sections come out the same, in the same order:
//!
//! - [`butter`] = `scipy.signal.butter(N, Wn, btype, fs=fs, output="sos")`: the analog Butterworth
//!   prototype (`buttap`), frequency transformation with pre-warped cut-offs (`lp2lp_zpk`,
//!   `lp2hp_zpk`, `lp2bp_zpk`, `lp2bs_zpk`), the bilinear transform (`bilinear_zpk`), and `zpk2sos`
//!   with its default `pairing="nearest"` (the poles closest to the unit circle go last).
//! - [`iirnotch`] = `scipy.signal.iirnotch(w0, Q, fs)`, as one section.
//!
//! Complex arithmetic follows numpy's (in particular complex division by Smith's method, which is
//! also what numpy does when it divides a complex array by a real scalar), so the coefficients
//! agree with scipy's to a few units in the last place.

use thiserror::Error;

/// One second-order section, as a row of scipy's `sos` array: `[b0, b1, b2, a0, a1, a2]` with
/// `a0 = 1`.
pub type Sos = [f64; 6];

/// The highest Butterworth order accepted.
pub const MAX_ORDER: usize = 8;

/// The response of a Butterworth filter, with its cut-off frequencies in Hz.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Band {
    Lowpass(f64),
    Highpass(f64),
    /// `(low, high)`
    Bandpass(f64, f64),
    /// `(low, high)`
    Bandstop(f64, f64),
}

impl Band {
    /// scipy's `btype` name.
    pub fn name(&self) -> &'static str {
        match self {
            Band::Lowpass(_) => "lowpass",
            Band::Highpass(_) => "highpass",
            Band::Bandpass(..) => "bandpass",
            Band::Bandstop(..) => "bandstop",
        }
    }
}

/// Why a filter cannot be designed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DesignError {
    #[error("filter order {order} is out of range: use an order from 1 to {MAX_ORDER}")]
    Order { order: usize },
    #[error("sample rate {fs} Hz is invalid: it must be a positive, finite number")]
    SampleRate { fs: f64 },
    #[error(
        "cut-off frequency {hz} Hz is out of range for a sample rate of {fs} Hz: it must be above 0 \
         and below the Nyquist frequency ({} Hz)",
        fs / 2.0
    )]
    Cutoff { hz: f64, fs: f64 },
    #[error("band [{low}, {high}] Hz is empty: the low edge must be below the high edge")]
    BandEdges { low: f64, high: f64 },
    #[error("notch quality factor Q = {q} is invalid: it must be a positive, finite number (30 is usual)")]
    Quality { q: f64 },
}

fn check_fs(fs: f64) -> Result<(), DesignError> {
    if fs.is_finite() && fs > 0.0 {
        Ok(())
    } else {
        Err(DesignError::SampleRate { fs })
    }
}

fn check_cutoff(hz: f64, fs: f64) -> Result<(), DesignError> {
    if hz.is_finite() && hz > 0.0 && hz < fs / 2.0 {
        Ok(())
    } else {
        Err(DesignError::Cutoff { hz, fs })
    }
}

/// Checks what [`butter`] checks, without designing anything.
pub fn check_butter(order: usize, band: Band, fs: f64) -> Result<(), DesignError> {
    if order == 0 || order > MAX_ORDER {
        return Err(DesignError::Order { order });
    }
    check_fs(fs)?;
    match band {
        Band::Lowpass(f) | Band::Highpass(f) => check_cutoff(f, fs),
        Band::Bandpass(low, high) | Band::Bandstop(low, high) => {
            check_cutoff(low, fs)?;
            check_cutoff(high, fs)?;
            if low < high {
                Ok(())
            } else {
                Err(DesignError::BandEdges { low, high })
            }
        }
    }
}

/// A digital Butterworth filter of `order` (1–8) as second-order sections, equal to
/// `scipy.signal.butter(order, Wn, btype, fs=fs, output="sos")`. Low-pass and high-pass filters of
/// odd order have one section holding the single real pole (and an extra pole/zero at the
/// origin); band-pass and band-stop filters have `order` sections.
pub fn butter(order: usize, band: Band, fs: f64) -> Result<Vec<Sos>, DesignError> {
    check_butter(order, band, fs)?;
    // iirfilter: Wn = Wn / (fs/2); fs = 2; warped = 2 * fs * tan(pi * Wn / fs)
    let warp = |hz: f64| 4.0 * (std::f64::consts::PI * (hz / (fs / 2.0)) / 2.0).tan();
    let (z, p, k) = buttap(order);
    let (z, p, k) = match band {
        Band::Lowpass(f) => lp2lp_zpk(&z, &p, k, warp(f)),
        Band::Highpass(f) => lp2hp_zpk(&z, &p, k, warp(f)),
        Band::Bandpass(low, high) | Band::Bandstop(low, high) => {
            let (w0, w1) = (warp(low), warp(high));
            let bw = w1 - w0;
            let wo = (w0 * w1).sqrt();
            if matches!(band, Band::Bandpass(..)) {
                lp2bp_zpk(&z, &p, k, wo, bw)
            } else {
                lp2bs_zpk(&z, &p, k, wo, bw)
            }
        }
    };
    let (z, p, k) = bilinear_zpk(&z, &p, k, 2.0);
    Ok(zpk2sos(z, p, k))
}

/// A second-order IIR notch at `w0` Hz with quality factor `q` (-3 dB bandwidth `w0 / q`), equal to
/// `scipy.signal.iirnotch(w0, q, fs)` as one section.
pub fn iirnotch(w0: f64, q: f64, fs: f64) -> Result<Sos, DesignError> {
    check_fs(fs)?;
    check_cutoff(w0, fs)?;
    if !(q.is_finite() && q > 0.0) {
        return Err(DesignError::Quality { q });
    }
    let w0 = 2.0 * w0 / fs;
    let bw = w0 / q * std::f64::consts::PI;
    let w0 = w0 * std::f64::consts::PI;
    let beta = (bw / 2.0).tan();
    let gain = 1.0 / (1.0 + beta);
    let cos = w0.cos();
    Ok([gain, gain * (-2.0 * cos), gain, 1.0, -2.0 * gain * cos, 2.0 * gain - 1.0])
}

// ---- complex numbers with numpy's arithmetic ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct C {
    re: f64,
    im: f64,
}

impl C {
    const ZERO: C = C { re: 0.0, im: 0.0 };
    const ONE: C = C { re: 1.0, im: 0.0 };

    fn new(re: f64, im: f64) -> C {
        C { re, im }
    }
    fn real(re: f64) -> C {
        C { re, im: 0.0 }
    }
    fn is_real(self) -> bool {
        self.im == 0.0
    }
    fn conj(self) -> C {
        C::new(self.re, -self.im)
    }
    fn neg(self) -> C {
        C::new(-self.re, -self.im)
    }
    fn add(self, o: C) -> C {
        C::new(self.re + o.re, self.im + o.im)
    }
    fn sub(self, o: C) -> C {
        C::new(self.re - o.re, self.im - o.im)
    }
    fn mul(self, o: C) -> C {
        C::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    /// numpy's `square` for complex numbers.
    fn square(self) -> C {
        C::new(self.re * self.re - self.im * self.im, self.re * self.im + self.im * self.re)
    }
    /// numpy's complex division (Smith's method).
    fn div(self, o: C) -> C {
        let (br, bi) = (o.re.abs(), o.im.abs());
        if br >= bi {
            if br == 0.0 && bi == 0.0 {
                C::new(self.re / br, self.im / br)
            } else {
                let rat = o.im / o.re;
                let scl = 1.0 / (o.re + o.im * rat);
                C::new((self.re + self.im * rat) * scl, (self.im - self.re * rat) * scl)
            }
        } else {
            let rat = o.re / o.im;
            let scl = 1.0 / (o.im + o.re * rat);
            C::new((self.re * rat + self.im) * scl, (self.im * rat - self.re) * scl)
        }
    }
    /// numpy's `np.abs` of a complex array (its SIMD loop, used by `zpk2sos` and `_cplxreal`):
    /// `larger * sqrt(fma(r, r, 1))` with `r = smaller / larger`. This is not always the same last
    /// bit as `hypot`, and that bit decides the order of sections whose poles mirror each other
    /// (a band centred at fs/4).
    fn abs(self) -> f64 {
        let (a, b) = (self.re.abs(), self.im.abs());
        let (larger, smaller) = if a >= b { (a, b) } else { (b, a) };
        if larger == 0.0 {
            return 0.0;
        }
        let r = smaller / larger;
        r.mul_add(r, 1.0).sqrt() * larger
    }
    /// glibc's `csqrt` for finite arguments of ordinary magnitude (the only ones that occur here).
    fn sqrt(self) -> C {
        let (re, im) = (self.re, self.im);
        if im == 0.0 {
            if re < 0.0 {
                C::new(0.0, (-re).sqrt().copysign(im))
            } else {
                C::new(re.sqrt().abs(), 0.0f64.copysign(im))
            }
        } else if re == 0.0 {
            let r = (0.5 * im.abs()).sqrt();
            C::new(r, r.copysign(im))
        } else {
            let d = re.hypot(im);
            let (r, s) = if re > 0.0 {
                let r = (0.5 * (d + re)).sqrt();
                (r, 0.5 * (im / r))
            } else {
                let s = (0.5 * (d - re)).sqrt();
                ((0.5 * (im / s)).abs(), s)
            };
            C::new(r, s.copysign(im))
        }
    }
}

/// numpy's `prod` of a complex sequence (a left-to-right product; 1 for an empty one).
fn prod(v: impl IntoIterator<Item = C>) -> C {
    let mut it = v.into_iter();
    match it.next() {
        None => C::ONE,
        Some(first) => it.fold(first, |acc, x| acc.mul(x)),
    }
}

type Zpk = (Vec<C>, Vec<C>, f64);

/// `buttap(N)`: no zeros, poles on the left half of the unit circle, gain 1.
fn buttap(n: usize) -> Zpk {
    // p = -exp(1j * pi * m / (2 * N)), m = -N+1, -N+3, ..., N-1; numpy divides a complex array
    // by a real scalar as complex division, i.e. by multiplying with its reciprocal.
    let jpi = C::new(0.0, std::f64::consts::PI);
    let p = (0..n)
        .map(|i| {
            let m = -(n as f64) + 1.0 + 2.0 * i as f64;
            let arg = jpi.mul(C::real(m)).div(C::real(2.0 * n as f64));
            let e = arg.re.exp();
            C::new(e * arg.im.cos(), e * arg.im.sin()).neg()
        })
        .collect();
    (Vec::new(), p, 1.0)
}

fn lp2lp_zpk(z: &[C], p: &[C], k: f64, wo: f64) -> Zpk {
    let degree = p.len() - z.len();
    let w = C::real(wo);
    (z.iter().map(|&x| w.mul(x)).collect(), p.iter().map(|&x| w.mul(x)).collect(), k * wo.powf(degree as f64))
}

fn lp2hp_zpk(z: &[C], p: &[C], k: f64, wo: f64) -> Zpk {
    let degree = p.len() - z.len();
    let w = C::real(wo);
    let mut z_hp: Vec<C> = z.iter().map(|&x| w.div(x)).collect();
    z_hp.extend(std::iter::repeat_n(C::ZERO, degree));
    let p_hp = p.iter().map(|&x| w.div(x)).collect();
    let gain = prod(z.iter().map(|x| x.neg())).div(prod(p.iter().map(|x| x.neg()))).re;
    (z_hp, p_hp, k * gain)
}

/// The two roots `x ± sqrt(x² - wo²)` of each point, all the `+` ones first.
fn split_around(v: &[C], wo: f64) -> Vec<C> {
    let wo2 = C::real(wo.powf(2.0));
    let roots: Vec<C> = v.iter().map(|&x| x.square().sub(wo2).sqrt()).collect();
    let mut out: Vec<C> = v.iter().zip(&roots).map(|(&x, &r)| x.add(r)).collect();
    out.extend(v.iter().zip(&roots).map(|(&x, &r)| x.sub(r)));
    out
}

fn lp2bp_zpk(z: &[C], p: &[C], k: f64, wo: f64, bw: f64) -> Zpk {
    let degree = p.len() - z.len();
    let scale = |x: &C| x.mul(C::real(bw)).div(C::real(2.0));
    let z_lp: Vec<C> = z.iter().map(scale).collect();
    let p_lp: Vec<C> = p.iter().map(scale).collect();
    let mut z_bp = split_around(&z_lp, wo);
    z_bp.extend(std::iter::repeat_n(C::ZERO, degree));
    (z_bp, split_around(&p_lp, wo), k * bw.powf(degree as f64))
}

fn lp2bs_zpk(z: &[C], p: &[C], k: f64, wo: f64, bw: f64) -> Zpk {
    let degree = p.len() - z.len();
    let half = C::real(bw / 2.0);
    let z_hp: Vec<C> = z.iter().map(|&x| half.div(x)).collect();
    let p_hp: Vec<C> = p.iter().map(|&x| half.div(x)).collect();
    let mut z_bs = split_around(&z_hp, wo);
    z_bs.extend(std::iter::repeat_n(C::new(0.0, wo), degree));
    z_bs.extend(std::iter::repeat_n(C::new(0.0, -wo), degree));
    let gain = prod(z.iter().map(|x| x.neg())).div(prod(p.iter().map(|x| x.neg()))).re;
    (z_bs, split_around(&p_hp, wo), k * gain)
}

fn bilinear_zpk(z: &[C], p: &[C], k: f64, fs: f64) -> Zpk {
    let degree = p.len() - z.len();
    let fs2 = C::real(2.0 * fs);
    let map = |&x: &C| fs2.add(x).div(fs2.sub(x));
    let mut z_z: Vec<C> = z.iter().map(map).collect();
    z_z.extend(std::iter::repeat_n(C::real(-1.0), degree));
    let p_z = p.iter().map(map).collect();
    let gain = prod(z.iter().map(|&x| fs2.sub(x))).div(prod(p.iter().map(|&x| fs2.sub(x)))).re;
    (z_z, p_z, k * gain)
}

/// scipy's `_cplxreal` followed by `np.concatenate`: one of each complex-conjugate pair (positive
/// imaginary part, pairs averaged), sorted by real part then |imaginary part|, followed by the
/// real values sorted.
fn cplxreal(z: &[C]) -> Vec<C> {
    let tol = 100.0 * f64::EPSILON;
    let mut z = z.to_vec();
    // np.lexsort((abs(z.imag), z.real)) is stable: sort by real part, then by |imag|.
    z.sort_by(|a, b| a.re.total_cmp(&b.re).then(a.im.abs().total_cmp(&b.im.abs())));
    let is_real = |x: &C| x.im.abs() <= tol * x.abs();
    let mut out: Vec<C> = Vec::with_capacity(z.len());
    let reals: Vec<C> = z.iter().filter(|x| is_real(x)).map(|x| C::real(x.re)).collect();
    let cplx: Vec<C> = z.iter().filter(|x| !is_real(x)).copied().collect();
    let mut zp: Vec<C> = cplx.iter().filter(|x| x.im > 0.0).copied().collect();
    let mut zn: Vec<C> = cplx.iter().filter(|x| x.im < 0.0).copied().collect();
    assert_eq!(zp.len(), zn.len(), "complex value without its conjugate in {z:?}");
    // Runs of (approximately) the same real part are sorted by |imag|.
    let mut start = 0;
    while start < zp.len() {
        let mut stop = start;
        while stop + 1 < zp.len() && zp[stop + 1].re - zp[stop].re <= tol * zp[stop].abs() {
            stop += 1;
        }
        if stop > start {
            for chunk in [&mut zp[start..=stop], &mut zn[start..=stop]] {
                chunk.sort_by(|a, b| a.im.abs().total_cmp(&b.im.abs()));
            }
        }
        start = stop + 1;
    }
    for (a, b) in zp.iter().zip(&zn) {
        assert!(a.sub(b.conj()).abs() <= tol * b.abs(), "complex value without its conjugate in {z:?}");
        out.push(a.add(b.conj()).div(C::real(2.0)));
    }
    out.extend(reals);
    out
}

/// `np.poly` of up to two roots, real part (the roots are real or a conjugate pair).
fn poly(roots: &[C]) -> Vec<f64> {
    let mut a = vec![C::ONE];
    for &r in roots {
        let v = [C::ONE, r.neg()];
        let mut out = vec![C::ZERO; a.len() + 1];
        for (i, &ai) in a.iter().enumerate() {
            for (j, &vj) in v.iter().enumerate() {
                out[i + j] = out[i + j].add(ai.mul(vj));
            }
        }
        a = out;
    }
    a.iter().map(|c| c.re).collect()
}

fn single_zpksos(z: &[C], p: &[C]) -> Sos {
    let mut sos = [0.0; 6];
    let b = poly(z);
    let a = poly(p);
    sos[3 - b.len()..3].copy_from_slice(&b);
    sos[6 - a.len()..6].copy_from_slice(&a);
    sos
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Real,
    Complex,
    Any,
}

/// `_nearest_real_complex_idx`: the index of the element of `fro` of the wanted kind nearest to
/// `to` (a stable sort: the first of equally near ones).
fn nearest(fro: &[C], to: C, which: Which) -> usize {
    let mut order: Vec<usize> = (0..fro.len()).collect();
    order.sort_by(|&a, &b| fro[a].sub(to).abs().total_cmp(&fro[b].sub(to).abs()));
    order
        .into_iter()
        .find(|&i| match which {
            Which::Any => true,
            Which::Real => fro[i].is_real(),
            Which::Complex => !fro[i].is_real(),
        })
        .expect("zpk2sos: no zero of the wanted kind left")
}

/// `np.argmin(np.abs(1 - np.abs(p)))` over the given indices.
fn idx_worst(p: &[C], among: impl Iterator<Item = usize>) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for i in among {
        let d = (1.0 - p[i].abs()).abs();
        if best.is_none_or(|(_, b)| d < b) {
            best = Some((i, d));
        }
    }
    best.expect("zpk2sos: no pole left").0
}

/// `zpk2sos(z, p, k)` with `pairing="nearest"` for a digital filter.
fn zpk2sos(mut z: Vec<C>, mut p: Vec<C>, k: f64) -> Vec<Sos> {
    if z.is_empty() && p.is_empty() {
        return vec![[k, 0.0, 0.0, 1.0, 0.0, 0.0]];
    }
    while p.len() < z.len() {
        p.push(C::ZERO);
    }
    while z.len() < p.len() {
        z.push(C::ZERO);
    }
    let n_sections = p.len().div_ceil(2);
    if p.len() % 2 == 1 {
        p.push(C::ZERO);
        z.push(C::ZERO);
    }
    let mut z = cplxreal(&z);
    let mut p = cplxreal(&p);
    let mut sos = vec![[0.0; 6]; n_sections];
    let count_real = |v: &[C]| v.iter().filter(|x| x.is_real()).count();
    for si in (0..n_sections).rev() {
        let p1 = p.remove(idx_worst(&p, 0..p.len()));
        if p1.is_real() && count_real(&p) == 0 {
            // The last remaining real pole.
            let z1 = z.remove(nearest(&z, p1, Which::Real));
            sos[si] = single_zpksos(&[z1, C::ZERO], &[p1, C::ZERO]);
        } else if p.len() + 1 == z.len() && !p1.is_real() && count_real(&p) == 1 && count_real(&z) == 1 {
            // One real pole and one real zero left: pair this complex pole with a complex zero.
            let z1 = z.remove(nearest(&z, p1, Which::Complex));
            sos[si] = single_zpksos(&[z1, z1.conj()], &[p1, p1.conj()]);
        } else {
            let p2 = if p1.is_real() {
                let reals: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_real()).collect();
                p.remove(idx_worst(&p, reals.into_iter()))
            } else {
                p1.conj()
            };
            if z.is_empty() {
                sos[si] = single_zpksos(&[], &[p1, p2]);
            } else {
                let z1 = z.remove(nearest(&z, p1, Which::Any));
                if !z1.is_real() {
                    sos[si] = single_zpksos(&[z1, z1.conj()], &[p1, p2]);
                } else if !z.is_empty() {
                    let z2 = z.remove(nearest(&z, p1, Which::Real));
                    sos[si] = single_zpksos(&[z1, z2], &[p1, p2]);
                } else {
                    sos[si] = single_zpksos(&[z1], &[p1, p2]);
                }
            }
        }
    }
    debug_assert!(p.is_empty() && z.is_empty());
    for c in &mut sos[0][..3] {
        *c *= k;
    }
    sos
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Magnitude response of a cascade at `f` Hz.
    fn gain(sos: &[Sos], f: f64, fs: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * f / fs;
        let zinv = C::new(w.cos(), -w.sin());
        let zinv2 = zinv.mul(zinv);
        sos.iter()
            .map(|s| {
                let num = C::real(s[0]).add(C::real(s[1]).mul(zinv)).add(C::real(s[2]).mul(zinv2));
                let den = C::real(s[3]).add(C::real(s[4]).mul(zinv)).add(C::real(s[5]).mul(zinv2));
                num.div(den).abs()
            })
            .product()
    }

    #[test]
    fn butterworth_responses_have_the_textbook_shape() {
        let fs = 250.0;
        for order in 1..=MAX_ORDER {
            let lp = butter(order, Band::Lowpass(30.0), fs).unwrap();
            assert_eq!(lp.len(), order.div_ceil(2));
            assert!((gain(&lp, 0.0, fs) - 1.0).abs() < 1e-12);
            assert!((gain(&lp, 30.0, fs) - 0.5f64.sqrt()).abs() < 1e-9, "order {order}: -3 dB at the cut-off");
            assert!(gain(&lp, 124.9, fs) < 1e-3);
            let hp = butter(order, Band::Highpass(5.0), fs).unwrap();
            assert!((gain(&hp, 125.0, fs) - 1.0).abs() < 1e-9);
            assert!((gain(&hp, 5.0, fs) - 0.5f64.sqrt()).abs() < 1e-9);
            let bp = butter(order, Band::Bandpass(8.0, 12.0), fs).unwrap();
            assert_eq!(bp.len(), order);
            assert!((gain(&bp, 8.0, fs) - 0.5f64.sqrt()).abs() < 1e-9);
            assert!((gain(&bp, 12.0, fs) - 0.5f64.sqrt()).abs() < 1e-9);
            let bs = butter(order, Band::Bandstop(45.0, 55.0), fs).unwrap();
            assert!((gain(&bs, 0.0, fs) - 1.0).abs() < 1e-9);
            // The zeros sit at the centre of the pre-warped band.
            let t = |f: f64| (std::f64::consts::PI * f / fs).tan();
            let centre = fs / std::f64::consts::PI * (t(45.0) * t(55.0)).sqrt().atan();
            assert!(gain(&bs, centre, fs) < 1e-6, "order {order}: zero in the stop band");
        }
    }

    #[test]
    fn notch_removes_its_frequency_and_passes_dc() {
        let s = iirnotch(50.0, 30.0, 250.0).unwrap();
        assert!(gain(&[s], 50.0, 250.0) < 1e-12);
        assert!((gain(&[s], 0.0, 250.0) - 1.0).abs() < 1e-12);
        let bw = 50.0 / 30.0;
        assert!((gain(&[s], 50.0 + bw / 2.0, 250.0) - 0.5f64.sqrt()).abs() < 0.02);
    }

    #[test]
    fn design_errors_name_the_bad_value() {
        assert_eq!(butter(0, Band::Lowpass(10.0), 250.0), Err(DesignError::Order { order: 0 }));
        assert_eq!(butter(9, Band::Lowpass(10.0), 250.0), Err(DesignError::Order { order: 9 }));
        assert_eq!(butter(4, Band::Lowpass(125.0), 250.0), Err(DesignError::Cutoff { hz: 125.0, fs: 250.0 }));
        assert_eq!(butter(4, Band::Highpass(0.0), 250.0), Err(DesignError::Cutoff { hz: 0.0, fs: 250.0 }));
        assert_eq!(butter(4, Band::Highpass(-1.0), 250.0), Err(DesignError::Cutoff { hz: -1.0, fs: 250.0 }));
        assert_eq!(butter(4, Band::Bandpass(40.0, 1.0), 250.0), Err(DesignError::BandEdges { low: 40.0, high: 1.0 }));
        assert_eq!(butter(4, Band::Bandstop(49.0, 49.0), 250.0), Err(DesignError::BandEdges { low: 49.0, high: 49.0 }));
        assert_eq!(butter(2, Band::Lowpass(10.0), 0.0), Err(DesignError::SampleRate { fs: 0.0 }));
        assert_eq!(iirnotch(50.0, 0.0, 250.0), Err(DesignError::Quality { q: 0.0 }));
        assert_eq!(iirnotch(60.0, 30.0, 100.0), Err(DesignError::Cutoff { hz: 60.0, fs: 100.0 }));
        let msg = butter(4, Band::Lowpass(130.0), 250.0).unwrap_err().to_string();
        assert!(msg.contains("130") && msg.contains("125"), "{msg}");
        let msg = butter(12, Band::Lowpass(10.0), 250.0).unwrap_err().to_string();
        assert!(msg.contains("12") && msg.contains("1 to 8"), "{msg}");
    }
}
