//! Property tests: untrusted text and links never panic the dedup code, and what it stores
//! reads back identically.

use chrono::{DateTime, Duration};
use policywatch::canon::canonical_url;
use policywatch::cluster::{signature, similarity, ClusterIndex, Signature};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn signature_round_trips_and_never_panics(title in "\\PC{0,200}", summary in "\\PC{0,400}") {
        let s = signature(&title, &summary);
        prop_assert_eq!(Signature::from_bytes(&s.to_bytes()), Ok(s.clone()));
        prop_assert_eq!(Signature::from_hex(&s.to_hex()), Ok(s.clone()));
        let sim = similarity(&s, &s);
        prop_assert!((0.0..=1.0).contains(&sim));
    }

    #[test]
    fn stored_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Signature::from_bytes(&bytes);
    }

    #[test]
    fn canonical_url_never_panics_and_is_idempotent(raw in "\\PC{0,120}") {
        if let Some(c) = canonical_url(&raw) {
            prop_assert_eq!(canonical_url(&c), Some(c.clone()));
        }
        let with_scheme = format!("https://{raw}");
        if let Some(c) = canonical_url(&with_scheme) {
            prop_assert!(c.starts_with("https://"));
            prop_assert_eq!(canonical_url(&c), Some(c.clone()));
        }
    }

    #[test]
    fn index_answers_only_known_clusters(
        texts in proptest::collection::vec(("[a-d ]{0,30}", 0i64..3, 0i64..200), 1..40)
    ) {
        let mut ix = ClusterIndex::new(Duration::days(2));
        let t0 = DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default();
        let mut ids = Vec::new();
        for (k, (text, feed, hours)) in texts.iter().enumerate() {
            let id = k as i64;
            let at = t0 + Duration::hours(*hours);
            let c = ix.insert(id, *feed, None, &signature(text, ""), at);
            if let Some(c) = c {
                // A joined cluster is always an earlier item's cluster.
                prop_assert!(ids.contains(&c));
            }
            ids.push(id);
        }
        ix.prune(t0 + Duration::hours(1000));
        prop_assert!(ix.is_empty());
    }
}
