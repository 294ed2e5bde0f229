//! The campaigns file loader on arbitrary UTF-8: never panics; an error names a line of the
//! text; every accepted campaign round-trips through its shared-memory record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracker_core::campaign::parse_file;
use tracker_core::record::{encode, RecordView};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_file(text) {
        Ok(list) => {
            let mut rec = Vec::new();
            for c in &list {
                encode(c, 8, &mut rec);
                let view = RecordView::new(&rec).expect("a record just encoded is valid");
                assert_eq!(&view.to_campaign(), c, "record round-trip");
                assert_eq!(view.account(), 8);
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e:?}"),
    }
});
