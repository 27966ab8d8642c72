//! Property tests: issue → verify round-trips for arbitrary valid claims, and any change to a
//! token's bytes (flip, insert, delete, truncate) is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use proptest::prelude::*;
use wsguard_token::{Claims, KeyRing, SessionData, SessionId, TokenPolicy, UserId, Verifier};

const NOW: u64 = 1_764_000_000;

fn verifier() -> Verifier {
    Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default())
}

fn arb_claims() -> impl Strategy<Value = Claims> {
    (
        "[A-Za-z0-9_-]{16,128}",
        "[!-~]{1,128}",
        proptest::collection::btree_map("[^\"\\\\]{0,8}", any::<i32>(), 0..6),
        0u64..3600,
        0u64..600,
    )
        .prop_map(|(sid, uid, map, age, since_active)| {
            let data = serde_json::to_string(&map).unwrap();
            let created = NOW - age;
            Claims {
                sid: SessionId::parse(&sid).unwrap(),
                uid: UserId::parse(&uid).unwrap(),
                data: SessionData::parse(&data).unwrap(),
                created,
                last_active: (created + since_active).min(NOW),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn issue_verify_round_trip(claims in arb_claims()) {
        let v = verifier();
        let token = v.issue(&claims);
        let verified = v.verify(&token, NOW).unwrap();
        prop_assert_eq!(verified.claims(), &claims);
    }

    #[test]
    fn any_byte_change_is_rejected(claims in arb_claims(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let v = verifier();
        let token = v.issue(&claims);
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let changed = String::from_utf8_lossy(&bytes);
        prop_assert!(v.verify(&changed, NOW).is_err(), "accepted after changing byte {}", i);
    }

    #[test]
    fn insertions_and_deletions_are_rejected(claims in arb_claims(), pos in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
        let v = verifier();
        let token = v.issue(&claims);
        let i = pos.index(token.len());
        let mut deleted = token.clone();
        deleted.remove(i);
        prop_assert!(v.verify(&deleted, NOW).is_err());
        let mut inserted = token.clone();
        inserted.insert(i, byte as char);
        prop_assert!(v.verify(&inserted, NOW).is_err());
        prop_assert!(v.verify(&token[..i], NOW).is_err());
    }

    #[test]
    fn arbitrary_input_never_panics(input in ".{0,600}", prefix in prop::sample::select(vec!["", "v1.", "v1.ephemeral.", "{"])) {
        let v = Verifier::new(
            Arc::new(KeyRing::ephemeral().with_legacy_secret(b"s")),
            TokenPolicy { accept_legacy_tokens: true, ..TokenPolicy::default() },
        );
        let _ = v.verify(&format!("{prefix}{input}"), NOW);
    }
}
