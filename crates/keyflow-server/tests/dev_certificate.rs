//! `serve --dev` started twice at once in one data directory: both must end up with the
//! same, valid certificate and key (they used to race and could mix one start's key
//! with the other's certificate: "certificate and key do not form a valid pair").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::{Arc, Barrier};

use keyflow_server::tls::{dev_certificate, server_config_with, TlsOptions};

#[test]
fn concurrent_first_starts_make_one_valid_pair() {
    for _round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let starts = 6;
        let barrier = Arc::new(Barrier::new(starts));
        let handles: Vec<_> = (0..starts)
            .map(|_| {
                let (tls, barrier) = (tls.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let (cert, key) = dev_certificate(&tls).unwrap();
                    // What each start then loads: it must be a matching pair.
                    server_config_with(&cert, &key, &TlsOptions::default()).unwrap();
                    (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap())
                })
            })
            .collect();
        let pairs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            pairs.windows(2).all(|w| w[0] == w[1]),
            "every start sees the one pair made first"
        );
        // Nothing half-written is left beside them.
        let mut names: Vec<String> = std::fs::read_dir(&tls)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".dev-cert.lock", "dev-cert.pem", "dev-key.pem"]);
    }
}

#[test]
fn a_half_written_pair_is_replaced_and_a_complete_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A key without its certificate (a start that crashed between the two files).
    std::fs::write(dir.path().join("dev-key.pem"), b"garbage").unwrap();
    let (cert, key) = dev_certificate(dir.path()).unwrap();
    server_config_with(&cert, &key, &TlsOptions::default()).unwrap();
    let first = std::fs::read(&cert).unwrap();
    let (cert, _) = dev_certificate(dir.path()).unwrap();
    assert_eq!(
        std::fs::read(cert).unwrap(),
        first,
        "reused on the next start"
    );
}
