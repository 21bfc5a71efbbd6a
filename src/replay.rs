//! Replay: the detector over recorded data.
