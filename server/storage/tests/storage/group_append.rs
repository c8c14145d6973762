//! `append_many` against one-by-one `append`.

use proptest::prelude::*;

use crate::{batch, open, records, topic};

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Appending batches in groups gives exactly the results, offsets, stored records and
    /// time lookups of appending them one by one, duplicates and sequence gaps included, and
    /// the dedup state survives a reopen.
    #[test]
    fn groups_behave_like_single_appends(
        ops in proptest::collection::vec((0u64..3, 0u64..6, -50i64..50, 1usize..4), 1..40),
        cuts in proptest::collection::vec(1usize..6, 1..40),
    ) {
        let dir_one = tempfile::tempdir().unwrap();
        let dir_many = tempfile::tempdir().unwrap();
        let one = open(dir_one.path());
        let many = open(dir_many.path());
        one.create_topic(topic("t", 1)).unwrap();
        many.create_topic(topic("t", 1)).unwrap();
        let (p1, pm) = (one.partition("t", 0).unwrap(), many.partition("t", 0).unwrap());
        let mut made: Vec<Vec<u8>> = ops
            .iter()
            .enumerate()
            .map(|(i, (pid, seq, ts, n))| {
                let values: Vec<Vec<u8>> = (0..*n).map(|k| format!("{i}-{k}").into_bytes()).collect();
                let recs: Vec<(i64, &[u8])> = values.iter().map(|v| (*ts, &v[..])).collect();
                batch(*pid, *seq, &recs)
            })
            .collect();
        let singles: Vec<String> = made
            .iter()
            .map(|b| format!("{:?}", p1.append(&mut b.clone(), 7)))
            .collect();
        let mut grouped = Vec::new();
        let mut rest: &mut [Vec<u8>] = &mut made;
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            let (group, tail) = rest.split_at_mut(n);
            let mut refs: Vec<&mut [u8]> = group.iter_mut().map(|b| &mut b[..]).collect();
            grouped.extend(pm.append_many(&mut refs, 7).iter().map(|r| format!("{r:?}")));
            rest = tail;
        }
        prop_assert_eq!(&singles, &grouped);
        prop_assert_eq!(p1.high_watermark(), pm.high_watermark());
        prop_assert_eq!((p1.size_bytes(), p1.batch_count()), (pm.size_bytes(), pm.batch_count()));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        p1.read(0, usize::MAX, u64::MAX, &mut a).unwrap();
        pm.read(0, usize::MAX, u64::MAX, &mut b).unwrap();
        prop_assert_eq!(records(&a), records(&b));
        for t in [-60i64, -10, 0, 10, 60] {
            prop_assert_eq!(p1.offset_for_time(t).unwrap(), pm.offset_for_time(t).unwrap());
        }
        // Dedup state is durable with the batches: after a reopen both stores answer every
        // (producer, sequence) alike, the stored ones as duplicates.
        drop((p1, pm));
        one.flush().unwrap();
        many.flush().unwrap();
        drop((one, many));
        let (one, many) = (open(dir_one.path()), open(dir_many.path()));
        let (p1, pm) = (one.partition("t", 0).unwrap(), many.partition("t", 0).unwrap());
        for (pid, seq, ts, _) in &ops {
            let again = batch(*pid, *seq, &[(*ts, b"again")]);
            let (r1, rm) = (p1.append(&mut again.clone(), 8), pm.append(&mut again.clone(), 8));
            prop_assert_eq!(format!("{r1:?}"), format!("{rm:?}"));
        }
    }
}
