//! `.regfs/status` and `status.json` in the core, without a mount: what they show of work in
//! flight.

use std::sync::Arc;

use regfs::testkit::core::{Core, GZIP, gzip, put_image, sha256};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// A decode (`layers/<n>.tar` of a gzip layer) shows in the status while it runs, by the layer's
/// blob digest, with the bytes decoded so far and no total (a decoded size is not known ahead).
/// 16 MiB of zeros decode for long enough to be seen.
#[test]
fn a_decode_in_flight_shows_in_the_status_with_its_bytes_so_far() {
    let raw = regfs::testkit::fixtures::layers::tar(&[("zeros".to_string(), vec![0u8; 16 << 20])]).expect("tar");
    let blob = gzip(&raw);
    let fake = Faulty::new(Fake::default());
    let layer = fake.add_blob(&blob);
    let (m, _) = put_image(&fake, "r", "v1", &[(layer.clone(), blob.len(), GZIP)], &[sha256(&raw).to_string()]);
    let core = Core::new(fake);
    let fs = Arc::clone(&core.fs);
    // The blob first, so that what runs next is the decode alone.
    assert_eq!(fs.cat(&format!("r/manifests/{m}/layers/0.tar.gz")).expect("blob"), blob);

    let reader = {
        let fs = Arc::clone(&fs);
        std::thread::spawn(move || fs.cat(&format!("r/manifests/{m}/layers/0.tar")).map(|b| b.len()))
    };
    let mut seen = Vec::new();
    while !reader.is_finished() {
        let status: serde_json::Value =
            serde_json::from_slice(&fs.cat(".regfs/status.json").expect("status.json")).expect("JSON");
        if let Some(job) = status["in_flight"].as_array().and_then(|j| j.iter().find(|j| j["kind"] == "decode")) {
            seen.push(job.clone());
        }
    }
    assert_eq!(reader.join().expect("reader").expect("decoded"), raw.len());
    eprintln!("the decode was seen in {} renderings", seen.len());
    let moving = seen.iter().find(|j| j["done"].as_u64().is_some_and(|d| d > 0 && d < raw.len() as u64));
    let job = moving.unwrap_or_else(|| panic!("no decode seen in progress ({} seen): {:?}", seen.len(), seen.last()));
    assert_eq!((job["repo"].as_str(), job["digest"].as_str()), (Some("r"), Some(layer.to_string().as_str())), "{job}");
    assert!(job["total"].is_null(), "{job}");
    let after: serde_json::Value =
        serde_json::from_slice(&fs.cat(".regfs/status.json").expect("status.json")).expect("JSON");
    assert_eq!(after["in_flight"].as_array().map(Vec::len), Some(0), "{after}");
}
