//! The steady-state processing path allocates nothing: a counting global allocator watches this
//! test's thread while blocks go through the preprocessor, the windower, Welch and the quality
//! meter (after construction, which may allocate).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bci2token_dsp::pipeline::{PreprocessConfig, Windower};
use bci2token_dsp::quality::{QualityConfig, QualityMeter};
use bci2token_dsp::reference::common_average_reference_masked;
use bci2token_dsp::spectrum::Welch;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if WATCHED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts the allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    WATCHED.with(|w| w.set(true));
    f();
    WATCHED.with(|w| w.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 100]))) >= 1);
}

#[test]
fn steady_state_processing_does_not_allocate() {
    let (fs, channels, frames) = (250.0, 16, 25);
    let cfg = PreprocessConfig {
        notch_hz: 50.0,
        notch_harmonics: 2,
        bandpass_hz: Some([1.0, 40.0]),
        car: true,
        ..PreprocessConfig::default()
    };
    let mut windower = Windower::new(&cfg, fs, channels, 500, 50).unwrap();
    let mut quality = QualityMeter::new(channels, 500, fs, QualityConfig::default()).unwrap();
    let mut welch = Welch::new(fs, 250).unwrap();
    let mut psd = vec![0.0; welch.bins()];
    let mut include = vec![true; channels];
    include[3] = false;
    let mut block32 = vec![0f32; channels * frames];
    let mut block64 = vec![0f64; channels * frames];
    let mut windows = 0usize;
    let mut good = 0usize;
    let mut t = 0usize;
    let mut run = |n_blocks: usize| {
        for _ in 0..n_blocks {
            for c in 0..channels {
                for i in 0..frames {
                    let x = ((t + i) as f64 * 0.07 * (c + 1) as f64).sin() * 40.0 + ((t + i) % 7) as f64;
                    block32[c * frames + i] = x as f32;
                    block64[c * frames + i] = x;
                }
            }
            t += frames;
            windower.push(&mut block32, frames, |_, w| {
                windows += 1;
                good += quality.assess(w.view()).iter().filter(|q| q.is_good()).count();
                welch.psd(w.row(0).as_slice().unwrap(), &mut psd).unwrap();
            });
            windower.preprocessor().process(&mut block64, frames);
            common_average_reference_masked(&mut block64, frames, &include);
        }
    };
    // Warm-up (first windows), then watch 60 s of blocks.
    run(40);
    let n = allocations(|| run(600));
    assert_eq!(n, 0, "{n} allocations in the steady state");
    assert!(windows > 250, "{windows} windows");
    assert!(good > 0);
}
