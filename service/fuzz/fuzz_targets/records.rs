//! Every record the service persists or reads back, decoded from arbitrary
//! bytes: the first byte picks the record, the rest is its content. A
//! decode either succeeds or is a typed error; never a panic, an abort or an
//! allocation the input cannot back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;

use chronos_sync::coordinator::{Coordinator, CoordinatorConfig};
use chronos_sync_service::wire;
use chronos_sync_service::{ConfigRecord, store};

fn config() -> &'static CoordinatorConfig {
    static C: OnceLock<CoordinatorConfig> = OnceLock::new();
    C.get_or_init(|| {
        let rec = ConfigRecord { initial_params: vec![1.0, 2.0, 3.0], min_commits: 2, ..ConfigRecord::standard() };
        ConfigRecord::decode_record(&rec.encode_to_vec()).expect("valid record").1
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    match kind % 5 {
        // meta.config
        0 => {
            if let Ok((rec, config)) = ConfigRecord::decode_record(body) {
                let _ = Coordinator::new(rec.initial_params, config);
            }
        }
        // state.snapshot
        1 => {
            let _ = Coordinator::restore(body, config().clone());
        }
        // idem.response of a commit
        2 => {
            if let Ok(a) = wire::CommitAnswer::decode(body) {
                if let Some(o) = wire::outcome_of(&a) {
                    assert_eq!(wire::outcome_of(&wire::answer_of(&o)), Some(o));
                }
            }
        }
        // accepted.hypergradient
        3 => {
            if let Ok(v) = store::f32s_from_blob(body) {
                assert_eq!(v.len() * 4, body.len());
            }
        }
        // an error detail in a status
        _ => {
            let s = tonic::Status::with_details(tonic::Code::Internal, "fuzz", bytes::Bytes::copy_from_slice(body));
            let _ = wire::from_status(&s);
        }
    }
});
