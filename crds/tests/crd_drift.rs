//! The committed CRD files under charts/iq720-operator/crds must equal the generator's
//! output. Run `make crds` after changing the API types.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use iq720_crds::generate;

#[test]
fn committed_crds_match_the_generator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/iq720-operator/crds");
    let mut expected_files: Vec<String> = Vec::new();
    for crd in generate::all_crds() {
        let name = generate::file_name(&crd);
        let path = dir.join(&name);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        let generated = generate::to_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "{} differs from the generator output; run `make crds`",
            path.display()
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present,
        expected_files,
        "stale or unknown files in {}",
        dir.display()
    );
}
