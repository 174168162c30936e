//! OpenAPI links: how one operation's answer feeds the next (a ciphertext from
//! `/encrypt` into `/decrypt`, a new purpose from `/keys/generate` into
//! `/keys/rotate`, …). Clients read them as documentation; Schemathesis's stateful
//! phase follows them, so chains of real calls are tested, not only single requests.
//!
//! Operations are named by `operationRef` (utoipa names operations after their
//! handlers, and `encrypt` exists twice: `/encrypt` and `/encrypt-fields`).

use serde_json::{json, Value};

/// The `operationRef` of `POST <path>` (or another method).
fn op(method: &str, path: &str) -> String {
    format!(
        "#/paths/{}/{method}",
        path.replace('~', "~0").replace('/', "~1")
    )
}

/// One link: a name, the target, and what it passes on.
struct Link {
    from: (&'static str, &'static str, &'static str),
    name: &'static str,
    to: (&'static str, &'static str),
    description: &'static str,
    feed: Feed,
}

/// What a link passes to its target: the whole request body, or parameters.
enum Feed {
    Body(Value),
    Parameters(Value),
}

fn links() -> Vec<Link> {
    vec![
        Link {
            from: ("post", "/api/encryption/encrypt", "200"),
            name: "DecryptIt",
            to: ("post", "/api/encryption/decrypt"),
            description: "The ciphertext decrypts (give the context it was made with, if any)",
            feed: Feed::Body(json!({ "encryptedData": "$response.body#/encryptedData" })),
        },
        Link {
            from: ("post", "/api/encryption/encrypt", "200"),
            name: "RewrapIt",
            to: ("post", "/api/encryption/rewrap"),
            description: "The ciphertext can be rewrapped under the active version",
            feed: Feed::Body(json!({ "encryptedData": "$response.body#/encryptedData" })),
        },
        Link {
            from: ("post", "/api/encryption/batch/encrypt", "200"),
            name: "DecryptTheBatch",
            to: ("post", "/api/encryption/batch/decrypt"),
            description: "Each sealed item decrypts (failed items carry no ciphertext)",
            feed: Feed::Body(json!({ "items": [
                "$response.body#/results/0/encryptedData",
                "$response.body#/results/1/encryptedData",
            ] })),
        },
        Link {
            from: ("post", "/api/encryption/encrypt-fields", "200"),
            name: "DecryptTheDocument",
            to: ("post", "/api/encryption/decrypt-fields"),
            description: "The document decrypts (with the documentId, context and bindArrayIndex it was encrypted with)",
            feed: Feed::Body(json!({ "data": "$response.body#/data" })),
        },
        Link {
            from: ("post", "/api/encryption/encrypt-file", "200"),
            name: "DecryptTheFile",
            to: ("post", "/api/encryption/decrypt-file"),
            description: "The file decrypts",
            feed: Feed::Body(json!({ "encryptedData": "$response.body#/encryptedData" })),
        },
        Link {
            from: ("post", "/api/encryption/keys/generate", "201"),
            name: "RotateIt",
            to: ("post", "/api/encryption/keys/rotate"),
            description: "The new purpose can be rotated",
            feed: Feed::Body(json!({ "purpose": "$response.body#/purpose" })),
        },
        Link {
            from: ("post", "/api/encryption/keys/generate", "201"),
            name: "ListIt",
            to: ("get", "/api/encryption/keys"),
            description: "The new purpose's versions and their status",
            feed: Feed::Parameters(json!({ "query.purpose": "$response.body#/purpose" })),
        },
        Link {
            from: ("post", "/api/encryption/keys/generate", "201"),
            name: "ItsPolicy",
            to: ("get", "/api/encryption/keys/policy"),
            description: "The new purpose's rotation policy",
            feed: Feed::Parameters(json!({ "query.purpose": "$response.body#/purpose" })),
        },
        Link {
            from: ("post", "/api/encryption/keys/rotate", "200"),
            name: "ListTheVersions",
            to: ("get", "/api/encryption/keys"),
            description: "The rotated purpose's versions: the old one rotating, the new one active",
            feed: Feed::Parameters(json!({ "query.purpose": "$response.body#/purpose" })),
        },
        Link {
            from: ("post", "/api/encryption/keys/rotate", "200"),
            name: "RevokeTheOldVersion",
            to: ("post", "/api/encryption/keys/revoke"),
            description: "The version rotated out can be revoked",
            feed: Feed::Body(json!({
                "purpose": "$response.body#/purpose",
                "version": "$response.body#/oldVersion",
                "reason": "stateful test",
            })),
        },
        Link {
            from: ("post", "/api/encryption/keys/revoke", "200"),
            name: "ReinstateIt",
            to: ("post", "/api/encryption/keys/reinstate"),
            description: "A revoked version can be reinstated",
            feed: Feed::Body(json!({
                "purpose": "$response.body#/purpose",
                "version": "$response.body#/version",
            })),
        },
        Link {
            from: ("post", "/api/encryption/keys/revoke", "200"),
            name: "DestroyIt",
            to: ("post", "/api/encryption/keys/destroy"),
            description: "A revoked version can be destroyed",
            feed: Feed::Body(json!({
                "purpose": "$response.body#/purpose",
                "version": "$response.body#/version",
                "confirm": true,
            })),
        },
    ]
}

/// Adds the links to the document; returns the ones whose source or target is not in
/// it (none, when the routes and this table agree).
pub(super) fn apply(doc: &mut Value) -> Vec<String> {
    let mut missing = Vec::new();
    for link in links() {
        let (method, path, status) = link.from;
        let (to_method, to_path) = link.to;
        if doc["paths"][to_path][to_method].is_null() {
            missing.push(format!("{to_method} {to_path}"));
            continue;
        }
        let mut value = json!({
            "operationRef": op(to_method, to_path),
            "description": link.description,
        });
        match link.feed {
            Feed::Body(body) => {
                // The body replaces the generated one whole (`merge_body: false`): a
                // ciphertext is only useful with nothing random beside it.
                value["requestBody"] = body;
                value["x-schemathesis"] = json!({ "merge_body": false });
            }
            Feed::Parameters(parameters) => value["parameters"] = parameters,
        }
        match doc["paths"]
            .get_mut(path)
            .and_then(|p| p.get_mut(method))
            .and_then(|op| op.get_mut("responses"))
            .and_then(|r| r.get_mut(status))
            .and_then(Value::as_object_mut)
        {
            Some(response) => {
                let links = response.entry("links").or_insert_with(|| json!({}));
                links[link.name] = value;
            }
            None => missing.push(format!("{method} {path} {status}")),
        }
    }
    missing
}
