//! Cross-crate scenarios through the façade: the seed's CP0 test scenarios, one module per area.
#![allow(clippy::unwrap_used)]

mod audit;
mod corrupt_rows;
mod faults;
mod lessons;
mod persistence;
mod standalone;
mod states;
mod support;
mod tracker;
