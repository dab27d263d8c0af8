//! How bci2tokend's shared worker threads (the decode thread, the store writer) take work from
//! many sessions without letting one of them starve another ([`fair`]), and how each thread
//! shows that it still makes progress ([`heartbeat`]).

pub mod fair;
pub mod heartbeat;
pub mod priority;

pub use fair::{Class, FairQueue, Lane, LaneId, Take, Taken};
pub use heartbeat::{Heartbeat, Heartbeats, Stuck};
