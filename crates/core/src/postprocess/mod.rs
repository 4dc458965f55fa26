//! Postprocess: from tile probabilities to measured nodules.
//!
//! Tiles are blended with Gaussian weights into one probability map on the working grid
//! ([`stitch`]); voxels above the threshold form candidates (3-D connected components);
//! each candidate is re-sampled onto the source grid and measured there in millimetres
//! ([`measure`]), then overlapping candidates are suppressed. Passes at several working
//! spacings are merged ([`merge_passes`]); a candidate classifier, when the model has one,
//! rescores the merged findings ([`rescore`]) before they are ranked once ([`rank`]).

mod measure;
mod stitch;

pub use measure::{
    combined_score, measure_candidates, merge_passes, rank, rescore, Measured, Segment, Thresholds,
};
pub use stitch::{into_probabilities, logit, probability, sample, stitch, EMPTY_LOGIT};
