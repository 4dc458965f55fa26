//! Pairing findings across two studies, one to one, after registration.

use super::register::Affine;
use crate::findings::Finding;

/// The smallest distance within which two findings may be the same nodule (mm).
pub const MIN_GATE_MM: f64 = 10.0;

/// The matching rule, as reports state it.
pub const MATCHING_RULE: &str = "greedy one-to-one, closest first: a current finding and a \
prior finding may pair when the current centre, mapped into the prior's coordinates by the \
registration, lies within max(10 mm, the larger of the two mean diameters) of the prior centre";

/// Pairs `current` findings with `prior` ones: `(current index, prior index)`.
///
/// Each current centre is mapped by `to_prior` into the prior's coordinates; every pair of
/// findings closer than their gate (max([`MIN_GATE_MM`], the larger mean diameter)) is a
/// candidate, and candidates are taken closest first, each finding at most once. Greedy
/// closest-first gives the optimal assignment whenever the nodules are further apart than
/// the registration error, which is what screening CT shows; it is also easy to explain.
pub fn match_findings(
    current: &[Finding],
    prior: &[Finding],
    to_prior: &Affine,
) -> Vec<(usize, usize)> {
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (c, finding) in current.iter().enumerate() {
        let mapped = to_prior.apply(finding.center_patient_mm);
        for (p, before) in prior.iter().enumerate() {
            let distance = distance(mapped, before.center_patient_mm);
            let gate = MIN_GATE_MM.max(finding.diameter_mm.max(before.diameter_mm));
            if distance <= gate {
                candidates.push((distance, c, p));
            }
        }
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used_current = vec![false; current.len()];
    let mut used_prior = vec![false; prior.len()];
    let mut pairs = Vec::new();
    for (_, c, p) in candidates {
        if !used_current[c] && !used_prior[p] {
            used_current[c] = true;
            used_prior[p] = true;
            pairs.push((c, p));
        }
    }
    pairs.sort_unstable();
    pairs
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::LungRads;
    use crate::testing::finding;

    fn at(c: [f64; 3], d: f64) -> Finding {
        let mut f = finding(0.9, LungRads::Cat2);
        f.center_patient_mm = c;
        f.diameter_mm = d;
        f
    }

    #[test]
    fn findings_pair_one_to_one_closest_first_after_the_map() {
        let shift = Affine::translation([30.0, -20.0, 5.0]);
        let prior = [at([30.0, -20.0, 5.0], 6.0), at([36.0, -20.0, 5.0], 6.0)];
        // The first current finding is 1 mm from prior 0 and 5 mm from prior 1; the second
        // is 4 mm from prior 0 and 2 mm from prior 1: closest first pairs 0-0 and 1-1.
        let current = [at([1.0, 0.0, 0.0], 6.0), at([4.0, 0.0, 0.0], 6.0)];
        assert_eq!(
            match_findings(&current, &prior, &shift),
            vec![(0, 0), (1, 1)]
        );
    }

    #[test]
    fn a_finding_beyond_the_gate_stays_unpaired_and_large_nodules_get_a_wider_gate() {
        let prior = [at([0.0, 0.0, 0.0], 5.0)];
        let far = [at([0.0, 0.0, 11.0], 5.0)];
        assert!(match_findings(&far, &prior, &Affine::IDENTITY).is_empty());
        let large = [at([0.0, 0.0, 11.0], 14.0)];
        assert_eq!(
            match_findings(&large, &prior, &Affine::IDENTITY),
            vec![(0, 0)]
        );
    }

    #[test]
    fn each_prior_finding_pairs_at_most_once() {
        let prior = [at([0.0, 0.0, 0.0], 5.0)];
        let current = [at([1.0, 0.0, 0.0], 5.0), at([2.0, 0.0, 0.0], 5.0)];
        assert_eq!(
            match_findings(&current, &prior, &Affine::IDENTITY),
            vec![(0, 0)]
        );
    }
}
