//! Runs the `users` example's code path (the same `run` that `cargo run -p
//! keyflow-fields --example users` calls) and checks what it found.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(missing_docs)]

#[path = "../examples/users.rs"]
mod users;

#[tokio::test]
async fn the_users_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = users::run(dir.path(), false).await.unwrap();
    // Search across the rotation: u-1 was indexed under v1, u-4 under v2.
    assert_eq!(
        out.found,
        vec![vec!["u-1".to_owned()], vec!["u-4".to_owned()], vec![]]
    );
    assert_eq!(
        out.census_before,
        vec![("userData:v1".to_owned(), 3), ("userData:v2".to_owned(), 1)]
    );
    assert_eq!(out.census_after, vec![("userData:v2".to_owned(), 4)]);
    assert_eq!(out.users, users::sample_users());
}
