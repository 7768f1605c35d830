//! S3 round trip against the local cluster's MinIO.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use iq720_tests::{
    Cluster, delete_object, get_object, list_keys, put_object, s3_bucket, s3_client,
};

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    let cluster = Cluster::shared().await.expect("local cluster");
    let s3 = s3_client(&cluster).unwrap();
    let bucket = s3_bucket(&cluster).unwrap();
    let prefix = format!(
        "harness-test/{}/",
        iq720_tests::harness::namespace::random_suffix(8)
    );
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    put_object(&s3, &bucket, &format!("{prefix}a.bin"), body.clone())
        .await
        .unwrap();
    put_object(&s3, &bucket, &format!("{prefix}b.txt"), b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        get_object(&s3, &bucket, &format!("{prefix}a.bin"))
            .await
            .unwrap(),
        body
    );
    let mut keys = list_keys(&s3, &bucket, &prefix).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![format!("{prefix}a.bin"), format!("{prefix}b.txt")]
    );
    for k in &keys {
        delete_object(&s3, &bucket, k).await.unwrap();
    }
    assert!(list_keys(&s3, &bucket, &prefix).await.unwrap().is_empty());
    assert!(
        get_object(&s3, &bucket, &format!("{prefix}a.bin"))
            .await
            .is_err()
    );
}
