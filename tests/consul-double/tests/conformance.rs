//! Conformance of the double to SPEC.md §3–§4, over real HTTP: one test
//! per rule, named after the rule. Sleeps appear only where a test asserts
//! that something has NOT happened yet; everything else polls with a deadline.
//!
//! Each rule's body runs twice (`both!`): `<rule>::double` against the
//! double and `<rule>::real` against a real Consul 1.8.7 agent
//! (a fresh single server per test), so the double is checked against
//! the real thing, not only against our reading of the spec. Where 1.8.7
//! and the double differ on purpose, the body branches on `s.is_real()` and
//! SPEC.md §8 says why. Tests of the double's
//! own features (watch runner, delay file, in-process API, lifecycle, the
//! binary) have no real half and say so.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{delete, get, put, request, wait_for_some, Backend, Resp};
use consul_double::{Options, Server};
use serde_json::{json, Value};

/// What most tests run with: `session_ttl_min` 1 s, so TTL rules can be
/// seen in seconds (the real agent gets `session_ttl_min = "1s"`).
fn conformance_options() -> Options {
    Options {
        session_ttl_min: Duration::from_secs(1),
        ..Options::default()
    }
}

/// The double alone, for tests of its own features (no real half).
fn double() -> Server {
    Server::start(conformance_options()).expect("start double")
}

fn entry(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "expected 200, got {r:?}");
    let v = r.json();
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(1),
        "one-element array: {v}"
    );
    v[0].clone()
}

fn modify_index(s: &Backend, key: &str) -> u64 {
    s.kv_get(key)
        .unwrap_or_else(|| panic!("{key} missing"))
        .modify_index
}

fn create_session(s: &Backend, body: Value) -> String {
    let r = put(s.addr(), "/v1/session/create", body.to_string().as_bytes());
    assert_eq!(r.status, 200, "session create: {r:?}");
    r.json()["ID"].as_str().expect("ID").to_string()
}

fn session_info(s: &Backend, id: &str) -> Value {
    let r = get(s.addr(), &format!("/v1/session/info/{id}"));
    assert_eq!(r.status, 200);
    r.json()
}

// ------------------------------------------------------------ §3.2 KV read

fn missing_key_is_404_with_empty_body_and_index_headers(s: &Backend) {
    let r = get(s.addr(), "/v1/kv/nope");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty(), "body: {:?}", r.text());
    assert!(r.index() >= 1);
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(r.header("X-Consul-LastContact"), Some("0"));
    // On the wire in Go's canonical case, for clients that compare
    // header names case-sensitively.
    for name in [
        "X-Consul-Index",
        "X-Consul-Knownleader",
        "X-Consul-Lastcontact",
    ] {
        assert!(
            r.headers.iter().any(|(k, _)| k == name),
            "{name} spelled so in {:?}",
            r.headers
        );
    }
}
both!(missing_key_is_404_with_empty_body_and_index_headers);

fn single_key_is_an_array_in_go_field_order_with_base64_value(s: &Backend) {
    assert_eq!(put(s.addr(), "/v1/kv/a/b", b"hey").text(), "true");
    let r = get(s.addr(), "/v1/kv/a/b");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let i = modify_index(s, "a/b");
    assert_eq!(
        r.text(),
        format!(
            "[{{\"LockIndex\":0,\"Key\":\"a/b\",\"Flags\":0,\"Value\":\"aGV5\",\"CreateIndex\":{i},\"ModifyIndex\":{i}}}]"
        )
    );
}
both!(single_key_is_an_array_in_go_field_order_with_base64_value);

fn empty_value_reads_back_as_null(s: &Backend) {
    put(s.addr(), "/v1/kv/e", b"");
    assert_eq!(entry(&get(s.addr(), "/v1/kv/e"))["Value"], Value::Null);
}
both!(empty_value_reads_back_as_null);

fn single_key_index_header_is_its_modify_index(s: &Backend) {
    put(s.addr(), "/v1/kv/k", b"1");
    put(s.addr(), "/v1/kv/other", b"2");
    let r = get(s.addr(), "/v1/kv/k");
    assert_eq!(r.index(), modify_index(s, "k"));
    assert!(r.index() < s.index());
}
both!(single_key_index_header_is_its_modify_index);

fn missing_key_index_is_the_kv_table_index(s: &Backend) {
    put(s.addr(), "/v1/kv/x", b"1");
    put(s.addr(), "/v1/kv/y", b"1");
    assert_eq!(get(s.addr(), "/v1/kv/nope").index(), modify_index(s, "y"));
}
both!(missing_key_index_is_the_kv_table_index);

fn index_is_never_zero(s: &Backend) {
    assert!(s.index() >= 1);
    assert!(get(s.addr(), "/v1/kv/nope").index() >= 1);
    assert!(get(s.addr(), "/v1/kv/p/?recurse").index() >= 1);
    let keys = get(s.addr(), "/v1/kv/?keys");
    assert_eq!((keys.status, keys.text().as_str()), (200, "[]"));
    assert!(keys.index() >= 1);
}
both!(index_is_never_zero);

fn recurse_lists_in_key_order_and_is_a_presence_flag(s: &Backend) {
    for k in ["p/b", "p/a", "p/c/d", "q"] {
        put(s.addr(), &format!("/v1/kv/{k}"), k.as_bytes());
    }
    // `recurse=false` still recurses: presence, not value (§3.2).
    let r = get(s.addr(), "/v1/kv/p/?recurse=false");
    let keys: Vec<String> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c/d"]);
    assert_eq!(r.index(), modify_index(s, "p/c/d"));
}
both!(recurse_lists_in_key_order_and_is_a_presence_flag);

fn recurse_on_empty_prefix_is_404_with_index(s: &Backend) {
    put(s.addr(), "/v1/kv/x", b"1");
    let r = get(s.addr(), "/v1/kv/service/none/?recurse=1");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(r.index() >= 1);
}
both!(recurse_on_empty_prefix_is_404_with_index);

fn recurse_index_never_goes_backwards_after_delete(s: &Backend) {
    put(s.addr(), "/v1/kv/p/a", b"1");
    put(s.addr(), "/v1/kv/p/b", b"1");
    let before = get(s.addr(), "/v1/kv/p/?recurse").index();
    delete(s.addr(), "/v1/kv/p/b");
    let after = get(s.addr(), "/v1/kv/p/?recurse");
    assert_eq!(after.json().as_array().map(Vec::len), Some(1));
    assert!(after.index() > before, "{} > {before}", after.index());
    // Deleting the last key: 404, and still not backwards (tombstones).
    delete(s.addr(), "/v1/kv/p/a");
    let gone = get(s.addr(), "/v1/kv/p/?recurse");
    assert_eq!(gone.status, 404);
    assert!(gone.index() > after.index());
}
both!(recurse_index_never_goes_backwards_after_delete);

fn keys_lists_names_and_collapses_at_separator(s: &Backend) {
    for k in ["a/b/c", "a/b/d", "a/e"] {
        put(s.addr(), &format!("/v1/kv/{k}"), b"v");
    }
    assert_eq!(
        get(s.addr(), "/v1/kv/a/?keys").json(),
        json!(["a/b/c", "a/b/d", "a/e"])
    );
    assert_eq!(
        get(s.addr(), "/v1/kv/a/?keys&separator=/").json(),
        json!(["a/b/", "a/e"])
    );
    assert_eq!(get(s.addr(), "/v1/kv/zz/?keys").status, 404);
}
both!(keys_lists_names_and_collapses_at_separator);

fn raw_returns_the_bytes_as_text_plain(s: &Backend) {
    put(s.addr(), "/v1/kv/r", b"node1");
    let r = get(s.addr(), "/v1/kv/r?raw");
    assert_eq!((r.status, r.text().as_str()), (200, "node1"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
}
both!(raw_returns_the_bytes_as_text_plain);

fn empty_key_without_recurse_is_400_missing_key_name(s: &Backend) {
    for (m, t) in [
        ("GET", "/v1/kv/"),
        ("PUT", "/v1/kv/"),
        ("DELETE", "/v1/kv/"),
    ] {
        let r = request(s.addr(), m, t, &[], b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, "Missing key name"),
            "{m}"
        );
    }
}
both!(empty_key_without_recurse_is_400_missing_key_name);

fn percent_encoded_paths_are_decoded(s: &Backend) {
    put(s.addr(), "/v1/kv/service%2Fb%20c/leader", b"x");
    assert!(s.kv_get("service/b c/leader").is_some());
    assert_eq!(get(s.addr(), "/v1/kv/service/b%20c/leader").status, 200);
}
both!(percent_encoded_paths_are_decoded);

fn get_with_content_length_zero_is_accepted(s: &Backend) {
    // `request` always sends Content-Length, as Patroni does (§1.1); make the
    // point explicit with a raw request.
    put(s.addr(), "/v1/kv/k", b"v");
    let mut c = std::net::TcpStream::connect(s.addr()).expect("connect");
    use std::io::{Read, Write};
    c.write_all(b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).expect("read");
    assert_eq!(common::parse_response(&raw).status, 200);
}
both!(get_with_content_length_zero_is_accepted);

fn pretty_is_indented_with_four_spaces_and_ends_in_a_newline(s: &Backend) {
    put(s.addr(), "/v1/kv/k", b"v");
    let r = get(s.addr(), "/v1/kv/k?pretty");
    let i = modify_index(s, "k");
    assert_eq!(
        r.text(),
        format!("[\n    {{\n        \"LockIndex\": 0,\n        \"Key\": \"k\",\n        \"Flags\": 0,\n        \"Value\": \"dg==\",\n        \"CreateIndex\": {i},\n        \"ModifyIndex\": {i}\n    }}\n]\n")
    );
}
both!(pretty_is_indented_with_four_spaces_and_ends_in_a_newline);

fn unknown_endpoint_is_404_with_an_empty_body(s: &Backend) {
    for t in ["/v1/nope", "/v1/session/nope", "/v1/agent/nope"] {
        let r = get(s.addr(), t);
        assert_eq!((r.status, r.text().as_str()), (404, ""), "{t}");
    }
}
both!(unknown_endpoint_is_404_with_an_empty_body);

fn unparsable_flags_or_cas_is_500_with_go_strconv_text(s: &Backend) {
    for (m, t) in [
        ("PUT", "/v1/kv/k?flags=x"),
        ("PUT", "/v1/kv/k?cas=x"),
        ("DELETE", "/v1/kv/k?cas=x"),
    ] {
        let r = request(s.addr(), m, t, &[], b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (500, "strconv.ParseUint: parsing \"x\": invalid syntax"),
            "{m} {t}"
        );
    }
    let r = put(s.addr(), "/v1/kv/k?cas=18446744073709551616", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            500,
            "strconv.ParseUint: parsing \"18446744073709551616\": value out of range"
        )
    );
    assert!(s.kv_get("k").is_none());
}
both!(unparsable_flags_or_cas_is_500_with_go_strconv_text);

fn wrong_method_is_405_with_allow(s: &Backend) {
    let r = request(s.addr(), "POST", "/v1/kv/k", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (405, "method POST not allowed")
    );
    assert!(r.header("Allow").is_some());
}
both!(wrong_method_is_405_with_allow);

// ----------------------------------------------------------- §3.3 KV write

fn plain_put_returns_true_and_sets_create_and_modify_index(s: &Backend) {
    let before = s.index();
    let r = put(s.addr(), "/v1/kv/k", b"v");
    assert_eq!((r.status, r.text().as_str()), (200, "true"));
    // KV writes do not carry query meta (§3.7).
    assert_eq!(r.header("X-Consul-Index"), None);
    let e = s.kv_get("k").expect("k");
    assert_eq!(e.create_index, e.modify_index);
    if s.is_real() {
        // Consul's Raft log also carries the catalog, coordinates and
        // no-op writes, so a KV write's index is only later (SPEC.md §8.3).
        assert!(e.create_index > before, "{} > {before}", e.create_index);
    } else {
        assert_eq!(e.create_index, before + 1);
    }
    put(s.addr(), "/v1/kv/k", b"w");
    let e2 = s.kv_get("k").expect("k");
    assert_eq!(e2.create_index, e.create_index);
    assert!(e2.modify_index > e.modify_index);
}
both!(plain_put_returns_true_and_sets_create_and_modify_index);

fn noop_put_keeps_modify_index(s: &Backend) {
    put(s.addr(), "/v1/kv/k", b"same");
    let (mi, idx) = (modify_index(s, "k"), s.index());
    assert_eq!(put(s.addr(), "/v1/kv/k", b"same").text(), "true");
    assert_eq!(modify_index(s, "k"), mi);
    assert_eq!(s.index(), idx);
}
both!(noop_put_keeps_modify_index);

fn cas_zero_is_create_only(s: &Backend) {
    assert_eq!(put(s.addr(), "/v1/kv/i?cas=0", b"1").text(), "true");
    assert_eq!(put(s.addr(), "/v1/kv/i?cas=0", b"2").text(), "false");
    assert_eq!(s.kv_get("i").expect("i").value, b"1");
}
both!(cas_zero_is_create_only);

fn cas_n_needs_existing_key_at_that_modify_index(s: &Backend) {
    assert_eq!(put(s.addr(), "/v1/kv/c?cas=5", b"x").text(), "false");
    assert!(s.kv_get("c").is_none());
    put(s.addr(), "/v1/kv/c", b"1");
    let mi = modify_index(s, "c");
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/c?cas={}", mi + 7), b"2").text(),
        "false"
    );
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/c?cas={mi}"), b"2").text(),
        "true"
    );
    assert_eq!(s.kv_get("c").expect("c").value, b"2");
}
both!(cas_n_needs_existing_key_at_that_modify_index);

fn flags_are_stored_and_a_plain_put_resets_them(s: &Backend) {
    put(s.addr(), "/v1/kv/f?flags=42", b"v");
    assert_eq!(entry(&get(s.addr(), "/v1/kv/f"))["Flags"], 42);
    put(s.addr(), "/v1/kv/f", b"v");
    assert_eq!(entry(&get(s.addr(), "/v1/kv/f"))["Flags"], 0);
}
both!(flags_are_stored_and_a_plain_put_resets_them);

fn cas_acquire_release_together_are_conflicting_flags(s: &Backend) {
    let r = put(s.addr(), "/v1/kv/k?cas=0&acquire=x", b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "Conflicting flags: acquire=x&cas=0");
}
both!(cas_acquire_release_together_are_conflicting_flags);

fn value_over_512k_is_413(s: &Backend) {
    let r = put(s.addr(), "/v1/kv/big", &vec![b'x'; 512 * 1024 + 1]);
    assert_eq!(r.status, 413);
    assert!(s.kv_get("big").is_none());
}
both!(value_over_512k_is_413);

// ------------------------------------------------------ §3.3 locks (acquire)

/// A well-formed session id that no session has.
const UNKNOWN_SESSION: &str = "adf4238a-882b-9ddc-4a9d-5b6758e4159e";

fn acquire_with_unknown_session_is_500_invalid_session(s: &Backend) {
    let r = put(
        s.addr(),
        &format!("/v1/kv/l?acquire={UNKNOWN_SESSION}"),
        b"n",
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), format!("invalid session \"{UNKNOWN_SESSION}\""));
    // 36 hex digits without hyphens is an id too (go-memdb's UUID index).
    let r = put(
        s.addr(),
        "/v1/kv/l?acquire=0123456789abcdef0123456789abcdef0123",
        b"n",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            500,
            "invalid session \"0123456789abcdef0123456789abcdef0123\""
        )
    );
}
both!(acquire_with_unknown_session_is_500_invalid_session);

/// A session id that is no UUID fails the session lookup itself (go-memdb's
/// UUID index) with a 500, on acquire, renew, info and destroy alike;
/// release does not look the session up.
fn session_id_that_is_no_uuid_is_500_failed_session_lookup(s: &Backend) {
    let cases = [
        ("deadbeef", "UUID must be 36 characters"),
        (
            "gggggggg-gggg-gggg-gggg-gggggggggggg",
            "Invalid UUID: encoding/hex: invalid byte: U+0067 'g'",
        ),
    ];
    for (id, why) in cases {
        let want = format!("failed session lookup: index error: {why}");
        for (m, t) in [
            ("PUT", format!("/v1/kv/l?acquire={id}")),
            ("PUT", format!("/v1/session/renew/{id}")),
            ("GET", format!("/v1/session/info/{id}")),
            ("PUT", format!("/v1/session/destroy/{id}")),
        ] {
            let r = request(s.addr(), m, &t, &[], b"n");
            assert_eq!((r.status, r.text()), (500, want.clone()), "{m} {t}");
        }
    }
    assert_eq!(
        put(s.addr(), "/v1/kv/l?release=deadbeef", b"").text(),
        "false"
    );
    assert!(s.kv_get("l").is_none());
}
both!(session_id_that_is_no_uuid_is_500_failed_session_lookup);

fn acquire_with_empty_session_is_500_missing_session(s: &Backend) {
    let r = put(s.addr(), "/v1/kv/l?acquire=", b"n");
    assert_eq!((r.status, r.text().as_str()), (500, "missing session"));
}
both!(acquire_with_empty_session_is_500_missing_session);

fn acquire_sets_session_and_lock_index_and_excludes_others(s: &Backend) {
    let a = create_session(s, json!({"LockDelay": "0s"}));
    let b = create_session(s, json!({}));
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?acquire={a}"), b"a").text(),
        "true"
    );
    let e = entry(&get(s.addr(), "/v1/kv/l"));
    assert_eq!(
        (e["Session"].as_str(), e["LockIndex"].as_u64()),
        (Some(a.as_str()), Some(1))
    );
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?acquire={b}"), b"b").text(),
        "false"
    );
    // Re-acquire by the holder updates the value, keeps LockIndex.
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?acquire={a}"), b"a2").text(),
        "true"
    );
    let e = s.kv_get("l").expect("l");
    assert_eq!((e.value.as_slice(), e.lock_index), (&b"a2"[..], 1));
}
both!(acquire_sets_session_and_lock_index_and_excludes_others);

fn release_clears_session_keeps_lock_index_and_only_for_the_holder(s: &Backend) {
    let a = create_session(s, json!({}));
    let b = create_session(s, json!({}));
    put(s.addr(), &format!("/v1/kv/l?acquire={a}"), b"a");
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?release={b}"), b"x").text(),
        "false"
    );
    assert_eq!(
        put(s.addr(), "/v1/kv/missing?release=x", b"x").text(),
        "false"
    );
    let mi = modify_index(s, "l");
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?release={a}"), b"r").text(),
        "true"
    );
    let e = s.kv_get("l").expect("l");
    assert_eq!(
        (e.session, e.lock_index, e.value.as_slice()),
        (None, 1, &b"r"[..])
    );
    assert!(e.modify_index > mi);
    // The JSON omits Session once unheld (omitempty, §3.2).
    assert!(entry(&get(s.addr(), "/v1/kv/l")).get("Session").is_none());
    // The next acquire of the unheld key bumps LockIndex.
    put(s.addr(), &format!("/v1/kv/l?acquire={b}"), b"b");
    assert_eq!(s.kv_get("l").expect("l").lock_index, 2);
}
both!(release_clears_session_keeps_lock_index_and_only_for_the_holder);

fn plain_put_on_a_locked_key_keeps_session_and_zeroes_lock_index(s: &Backend) {
    let a = create_session(s, json!({}));
    put(s.addr(), &format!("/v1/kv/l?acquire={a}"), b"a");
    assert_eq!(put(s.addr(), "/v1/kv/l", b"plain").text(), "true");
    let e = s.kv_get("l").expect("l");
    assert_eq!((e.session.as_deref(), e.lock_index), (Some(a.as_str()), 0));
}
both!(plain_put_on_a_locked_key_keeps_session_and_zeroes_lock_index);

fn lock_delay_refuses_acquire_until_it_passes(s: &Backend) {
    let a = create_session(s, json!({"LockDelay": "1s"}));
    let b = create_session(s, json!({}));
    put(s.addr(), &format!("/v1/kv/l?acquire={a}"), b"a");
    let destroyed = Instant::now();
    assert_eq!(
        put(s.addr(), &format!("/v1/session/destroy/{a}"), b"").text(),
        "true"
    );
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?acquire={b}"), b"b").text(),
        "false"
    );
    wait_for_some(
        "acquire to succeed after the 1s lock-delay",
        Duration::from_secs(5),
        || (put(s.addr(), &format!("/v1/kv/l?acquire={b}"), b"b").text() == "true").then_some(()),
    );
    assert!(destroyed.elapsed() >= Duration::from_millis(900));
}
both!(lock_delay_refuses_acquire_until_it_passes);

fn default_lock_delay_holds_off_acquire_after_destroy(s: &Backend) {
    // Consul's default lock-delay is 15 s: right after the holder's session
    // is destroyed, another session cannot take the key.
    let a = create_session(s, json!({}));
    let b = create_session(s, json!({}));
    put(s.addr(), &format!("/v1/kv/l?acquire={a}"), b"a");
    put(s.addr(), &format!("/v1/session/destroy/{a}"), b"");
    assert!(s.kv_get("l").is_some_and(|e| e.session.is_none()));
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/l?acquire={b}"), b"b").text(),
        "false"
    );
    // A plain PUT is not held off.
    assert_eq!(put(s.addr(), "/v1/kv/l", b"plain").text(), "true");
}
both!(default_lock_delay_holds_off_acquire_after_destroy);

// ---------------------------------------------------------- §3.4 KV delete

fn plain_delete_is_true_even_when_missing(s: &Backend) {
    let idx = s.index();
    assert_eq!(delete(s.addr(), "/v1/kv/none").text(), "true");
    assert_eq!(s.index(), idx, "deleting nothing is not a write");
    put(s.addr(), "/v1/kv/k", b"v");
    assert_eq!(delete(s.addr(), "/v1/kv/k").text(), "true");
    assert!(s.kv_get("k").is_none());
}
both!(plain_delete_is_true_even_when_missing);

fn delete_cas_on_missing_key_is_true(s: &Backend) {
    assert_eq!(delete(s.addr(), "/v1/kv/none?cas=9").text(), "true");
}
both!(delete_cas_on_missing_key_is_true);

fn delete_cas_deletes_only_at_matching_index(s: &Backend) {
    put(s.addr(), "/v1/kv/k", b"v");
    let mi = modify_index(s, "k");
    assert_eq!(delete(s.addr(), "/v1/kv/k?cas=0").text(), "false");
    assert_eq!(
        delete(s.addr(), &format!("/v1/kv/k?cas={}", mi + 1)).text(),
        "false"
    );
    assert!(s.kv_get("k").is_some());
    assert_eq!(
        delete(s.addr(), &format!("/v1/kv/k?cas={mi}")).text(),
        "true"
    );
    assert!(s.kv_get("k").is_none());
}
both!(delete_cas_deletes_only_at_matching_index);

fn delete_recurse_removes_the_prefix_and_rejects_cas(s: &Backend) {
    for k in ["p/a", "p/b/c", "q"] {
        put(s.addr(), &format!("/v1/kv/{k}"), b"v");
    }
    assert_eq!(delete(s.addr(), "/v1/kv/p/?recurse=1&cas=1").status, 400);
    assert_eq!(delete(s.addr(), "/v1/kv/p/?recurse=1").text(), "true");
    assert!(s.kv_get("p/a").is_none() && s.kv_get("p/b/c").is_none());
    assert!(s.kv_get("q").is_some());
}
both!(delete_recurse_removes_the_prefix_and_rejects_cas);

// ------------------------------------------------------ §3.6 blocking GETs

fn blocking_get_returns_promptly_after_a_change(s: &Backend) {
    put(s.addr(), "/v1/kv/w", b"old");
    let mi = modify_index(s, "w");
    let addr = s.addr();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || get(addr, &format!("/v1/kv/w?index={mi}&wait=30s")));
    // Whether the write lands before or after the GET parks, it must return
    // with the new value long before the 30 s wait.
    s.kv_put("w", b"new");
    let r = waiter.join().expect("waiter thread");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(entry(&r)["Value"], "bmV3");
    assert!(r.index() > mi);
}
both!(blocking_get_returns_promptly_after_a_change);

fn blocking_get_times_out_with_the_same_index(s: &Backend) {
    put(s.addr(), "/v1/kv/w", b"v");
    let mi = modify_index(s, "w");
    for wait in ["1000ms", "1.2s"] {
        let started = Instant::now();
        let r = get(s.addr(), &format!("/v1/kv/w?index={mi}&wait={wait}"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(950),
            "{wait}: returned after {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{wait}: returned after {took:?}"
        );
        // Patroni's watch() compares this header to the leader version (§1.3 row 17).
        assert_eq!(r.index(), mi);
        assert_eq!(entry(&r)["Value"], "dg==");
    }
}
both!(blocking_get_times_out_with_the_same_index);

fn blocking_get_returns_at_once_when_index_is_behind(s: &Backend) {
    put(s.addr(), "/v1/kv/w", b"v");
    put(s.addr(), "/v1/kv/w", b"v2");
    let started = Instant::now();
    let r = get(s.addr(), "/v1/kv/w?index=1&wait=30s");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.index(), modify_index(s, "w"));
}
both!(blocking_get_returns_at_once_when_index_is_behind);

fn blocking_single_key_ignores_writes_to_other_keys(s: &Backend) {
    put(s.addr(), "/v1/kv/w", b"v");
    let mi = modify_index(s, "w");
    let addr = s.addr();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || get(addr, &format!("/v1/kv/w?index={mi}&wait=1500ms")));
    let mut n = 0u32;
    while !waiter.is_finished() {
        n += 1;
        s.kv_put("other", n.to_string().as_bytes());
        std::thread::sleep(Duration::from_millis(100)); // pacing the writer, not synchronising
    }
    let r = waiter.join().expect("waiter thread");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(r.index(), mi);
    assert!(n > 5, "other writes happened meanwhile");
}
both!(blocking_single_key_ignores_writes_to_other_keys);

/// A blocking read of a missing key watches the spot in Consul's radix tree
/// where the key would be (go-memdb `FirstWatch`): writes near it (here:
/// under the same prefix) wake it, still 404 with the new table index;
/// writes elsewhere do not, and when the wait runs out the answer carries
/// the index of its last look, not the table's index of now.
fn blocking_get_on_missing_key_wakes_only_for_writes_near_it(s: &Backend) {
    s.kv_put("a/x", b"1");
    s.kv_put("zz/y", b"1");
    let idx = get(s.addr(), "/v1/kv/a/missing").index();
    let addr = s.addr();
    let started = Instant::now();
    let waiter =
        std::thread::spawn(move || get(addr, &format!("/v1/kv/a/missing?index={idx}&wait=2s")));
    // Head start: the GET must be parked before the first write elsewhere,
    // or its first look already sees a newer table index and answers at
    // once, as it should.
    std::thread::sleep(Duration::from_millis(500));
    let mut n = 0u32;
    while !waiter.is_finished() {
        n += 1;
        s.kv_put("zz/y", n.to_string().as_bytes());
        std::thread::sleep(Duration::from_millis(100)); // pacing the writer, not synchronising
    }
    let r = waiter.join().expect("waiter thread");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "woken after {:?} by writes elsewhere: {r:?}",
        started.elapsed()
    );
    assert_eq!((r.status, r.index()), (404, idx));
    assert!(n > 5, "writes elsewhere happened meanwhile");

    let idx = get(s.addr(), "/v1/kv/a/missing").index();
    let started = Instant::now();
    let waiter =
        std::thread::spawn(move || get(addr, &format!("/v1/kv/a/missing?index={idx}&wait=30s")));
    s.kv_put("a/other", b"2");
    let r = waiter.join().expect("waiter thread");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 404);
    assert!(r.index() > idx, "{} > {idx}", r.index());
}
both!(blocking_get_on_missing_key_wakes_only_for_writes_near_it);

fn blocking_get_on_missing_key_returns_when_created(s: &Backend) {
    let r = get(s.addr(), "/v1/kv/later");
    assert_eq!(r.status, 404);
    let idx = r.index();
    let addr = s.addr();
    let waiter =
        std::thread::spawn(move || get(addr, &format!("/v1/kv/later?index={idx}&wait=30s")));
    s.kv_put("later", b"here");
    let r = waiter.join().expect("waiter thread");
    assert_eq!(r.status, 200);
    assert!(r.index() > idx);
}
both!(blocking_get_on_missing_key_returns_when_created);

fn blocking_get_on_deleted_key_returns_404_with_larger_index(s: &Backend) {
    put(s.addr(), "/v1/kv/gone", b"v");
    let mi = modify_index(s, "gone");
    let addr = s.addr();
    let waiter = std::thread::spawn(move || get(addr, &format!("/v1/kv/gone?index={mi}&wait=30s")));
    s.kv_delete("gone");
    let r = waiter.join().expect("waiter thread");
    assert_eq!(r.status, 404);
    assert!(r.index() > mi);
}
both!(blocking_get_on_deleted_key_returns_404_with_larger_index);

fn bad_wait_or_index_is_400_and_stale_with_consistent_is_400(s: &Backend) {
    let r = get(s.addr(), "/v1/kv/k?index=1&wait=abc");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid wait time"));
    let r = get(s.addr(), "/v1/kv/k?index=x");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid index"));
    let r = get(s.addr(), "/v1/kv/k?stale&consistent");
    assert_eq!(r.status, 400);
    assert!(r
        .text()
        .starts_with("Cannot specify ?stale with ?consistent"));
}
both!(bad_wait_or_index_is_400_and_stale_with_consistent_is_400);

// ------------------------------------------------------------- §3.5 sessions

fn session_create_defaults(s: &Backend) {
    let r = request(s.addr(), "PUT", "/v1/session/create", &[], b"");
    assert_eq!(r.status, 200);
    let id = r.json()["ID"].as_str().expect("ID").to_string();
    assert_eq!(id.len(), 36, "UUID format: {id}");
    let info = session_info(s, &id);
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(info[0]["TTL"], "");
}
both!(session_create_defaults);

fn session_create_matches_keys_case_insensitively(s: &Backend) {
    // Patroni's exact body (§1.4), lower-case keys.
    let id = create_session(
        s,
        json!({"name": "batman-postgresql0", "checks": [], "lockdelay": "0.001s", "behavior": "delete", "ttl": "15.0s"}),
    );
    let info = session_info(s, &id);
    assert_eq!(info[0]["Name"], "batman-postgresql0");
    assert_eq!(info[0]["Behavior"], "delete");
    assert_eq!(info[0]["LockDelay"], 1_000_000u64);
    assert_eq!(info[0]["TTL"], "15.0s");
    assert_eq!(info[0]["NodeChecks"], json!([]));
}
both!(session_create_matches_keys_case_insensitively);

fn session_lock_delay_numbers_below_1000_are_seconds(s: &Backend) {
    let a = create_session(s, json!({"LockDelay": 5}));
    let b = create_session(s, json!({"LockDelay": 2_000_000_000u64}));
    assert_eq!(session_info(s, &a)[0]["LockDelay"], 5_000_000_000u64);
    assert_eq!(session_info(s, &b)[0]["LockDelay"], 2_000_000_000u64);
}
both!(session_lock_delay_numbers_below_1000_are_seconds);

fn session_ttl_out_of_bounds_is_500_with_the_exact_text(s: &Backend) {
    let r = put(s.addr(), "/v1/session/create", br#"{"ttl": "5.0s"}"#);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
    );
    let r = put(s.addr(), "/v1/session/create", br#"{"TTL": "25h"}"#);
    assert_eq!(
        r.text(),
        "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]"
    );
}
// Consul's default session_ttl_min (10 s).
both!(
    session_ttl_out_of_bounds_is_500_with_the_exact_text,
    Options::default()
);

fn session_ttl_min_is_configurable(s: &Backend) {
    // Patroni's tests use 5s (§1.5); these tests run with 1s.
    assert_eq!(
        put(s.addr(), "/v1/session/create", br#"{"ttl": "5.0s"}"#).status,
        200
    );
}
both!(session_ttl_min_is_configurable);

fn session_ttl_unparsable_is_500(s: &Backend) {
    let r = put(s.addr(), "/v1/session/create", br#"{"TTL": "abc"}"#);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "Session TTL 'abc' invalid: time: invalid duration \"abc\""
    );
}
both!(session_ttl_unparsable_is_500);

fn session_invalid_behavior_is_500(s: &Backend) {
    let r = put(
        s.addr(),
        "/v1/session/create",
        br#"{"Behavior": "explode"}"#,
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "Invalid Behavior setting 'explode'")
    );
}
both!(session_invalid_behavior_is_500);

fn session_body_that_is_not_json_is_400(s: &Backend) {
    let r = put(s.addr(), "/v1/session/create", b"{nope");
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("Request decode failed: "),
        "{}",
        r.text()
    );
}
both!(session_body_that_is_not_json_is_400);

fn session_renew_returns_a_one_element_array_and_404_when_unknown(s: &Backend) {
    let id = create_session(s, json!({"TTL": "10s"}));
    let r = put(s.addr(), &format!("/v1/session/renew/{id}"), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["ID"], id.as_str());
    let r = put(
        s.addr(),
        &format!("/v1/session/renew/{UNKNOWN_SESSION}"),
        b"",
    );
    assert_eq!(
        (r.status, r.text()),
        (404, format!("Session id '{UNKNOWN_SESSION}' not found"))
    );
}
both!(session_renew_returns_a_one_element_array_and_404_when_unknown);

/// Session reads report the sessions table's index: moved by create and
/// destroy, not by renewals or KV writes; so a blocking session read is not
/// woken by KV writes.
fn session_reads_report_the_sessions_table_index(s: &Backend) {
    let before = get(s.addr(), "/v1/session/list").index();
    let id = create_session(s, json!({"TTL": "30s"}));
    let created = get(s.addr(), "/v1/session/list").index();
    assert!(created > before, "{created} > {before}");
    s.kv_put("k", b"v");
    assert_eq!(
        put(s.addr(), &format!("/v1/session/renew/{id}"), b"").status,
        200
    );
    for t in [
        "/v1/session/list".to_string(),
        format!("/v1/session/info/{id}"),
        "/v1/session/node/consul-double".to_string(),
    ] {
        assert_eq!(get(s.addr(), &t).index(), created, "{t}");
    }
    let addr = s.addr();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || {
        get(
            addr,
            &format!("/v1/session/list?index={created}&wait=1500ms"),
        )
    });
    let mut n = 0u32;
    while !waiter.is_finished() {
        n += 1;
        s.kv_put("k", n.to_string().as_bytes());
        std::thread::sleep(Duration::from_millis(100)); // pacing the writer, not synchronising
    }
    let r = waiter.join().expect("waiter thread");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "woken after {:?} by KV writes",
        started.elapsed()
    );
    assert_eq!(r.index(), created);
    put(s.addr(), &format!("/v1/session/destroy/{id}"), b"");
    assert!(get(s.addr(), "/v1/session/list").index() > created);
}
both!(session_reads_report_the_sessions_table_index);

fn session_destroy_is_idempotent_true(s: &Backend) {
    let id = create_session(s, json!({}));
    for _ in 0..2 {
        let r = put(s.addr(), &format!("/v1/session/destroy/{id}"), b"");
        assert_eq!((r.status, r.text().as_str()), (200, "true"));
    }
    assert_eq!(session_info(s, &id), json!([]));
}
both!(session_destroy_is_idempotent_true);

fn session_behavior_delete_removes_keys_after_2x_ttl_not_before(s: &Backend) {
    let created = Instant::now();
    let id = create_session(
        s,
        json!({"ttl": "1s", "behavior": "delete", "lockdelay": "0s"}),
    );
    assert_eq!(
        put(s.addr(), &format!("/v1/kv/m?acquire={id}"), b"n").text(),
        "true"
    );
    // Past the TTL but inside the 2× grace (§3.5): still there.
    std::thread::sleep(Duration::from_millis(1300).saturating_sub(created.elapsed()));
    assert!(s.kv_get("m").is_some(), "key deleted before 2×TTL");
    wait_for_some(
        "the session's key to be deleted at 2×TTL",
        Duration::from_secs(5),
        || s.kv_get("m").is_none().then_some(()),
    );
    assert!(created.elapsed() >= Duration::from_millis(1900));
    assert_eq!(session_info(s, &id), json!([]));
    assert_eq!(
        put(s.addr(), &format!("/v1/session/renew/{id}"), b"").status,
        404
    );
}
both!(session_behavior_delete_removes_keys_after_2x_ttl_not_before);

fn session_behavior_release_keeps_keys_and_clears_session(s: &Backend) {
    let id = create_session(s, json!({"ttl": "1s", "lockdelay": "0s"}));
    put(s.addr(), &format!("/v1/kv/m?acquire={id}"), b"n");
    let mi = modify_index(s, "m");
    wait_for_some(
        "the session to expire and release its key",
        Duration::from_secs(5),
        || s.kv_get("m").filter(|e| e.session.is_none()),
    );
    let e = s.kv_get("m").expect("m");
    assert_eq!(e.lock_index, 1);
    assert!(e.modify_index > mi);
}
both!(session_behavior_release_keeps_keys_and_clears_session);

fn session_renew_keeps_the_session_alive(s: &Backend) {
    let id = create_session(s, json!({"ttl": "1s", "behavior": "delete"}));
    put(s.addr(), &format!("/v1/kv/m?acquire={id}"), b"n");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            put(s.addr(), &format!("/v1/session/renew/{id}"), b"").status,
            200
        );
        assert!(s.kv_get("m").is_some(), "key lost while renewing");
        std::thread::sleep(Duration::from_millis(300)); // renew cadence
    }
}
both!(session_renew_keeps_the_session_alive);

// ------------------------------------------------------ §3.9 agent, status

fn agent_self_has_session_ttl_min_only_in_debug_config(s: &Backend) {
    let r = get(s.addr(), "/v1/agent/self");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(
        v["Config"].get("SessionTTLMin").is_none(),
        "reproduce §0.2, do not fix"
    );
    assert_eq!(v["Config"]["Datacenter"], "dc1");
    assert_eq!(v["DebugConfig"]["SessionTTLMin"], "1s");
}
both!(agent_self_has_session_ttl_min_only_in_debug_config);

fn service_register_accepts_check_and_checks_in_any_case(s: &Backend) {
    let old = br#"{"name": "batman", "enabletagoverride": true, "id": "batman/postgresql0", "address": "127.0.0.1", "port": 5432, "tags": ["primary", "master"], "check": {"http": "http://127.0.0.1:8008/primary", "interval": "5s", "DeregisterCriticalServiceAfter": "150.0s"}}"#;
    let new = br#"{"Name": "batman", "ID": "batman/postgresql1", "Port": 5433, "Tags": ["replica"], "checks": [{"http": "http://127.0.0.1:8009/replica", "interval": "5s"}]}"#;
    assert_eq!(put(s.addr(), "/v1/agent/service/register", old).status, 200);
    assert_eq!(put(s.addr(), "/v1/agent/service/register", new).status, 200);
    let services = get(s.addr(), "/v1/agent/services").json();
    assert_eq!(services["batman/postgresql0"]["Port"], 5432);
    assert_eq!(services["batman/postgresql1"]["Tags"], json!(["replica"]));
    let health = get(s.addr(), "/v1/health/service/batman").json();
    assert_eq!(health.as_array().map(Vec::len), Some(2));
    assert_eq!(
        health[0]["Checks"][1]["CheckID"],
        "service:batman/postgresql0"
    );
    let r = put(s.addr(), "/v1/agent/service/register", br#"{"port": 1}"#);
    assert_eq!((r.status, r.text().as_str()), (400, "Missing service name"));
}
both!(service_register_accepts_check_and_checks_in_any_case);

fn service_deregister_takes_ids_with_slashes_and_404s_unknown_ids(s: &Backend) {
    put(
        s.addr(),
        "/v1/agent/service/register",
        br#"{"name": "batman", "id": "batman/pg0"}"#,
    );
    assert_eq!(
        put(s.addr(), "/v1/agent/service/deregister/batman/pg0", b"").status,
        200
    );
    assert!(get(s.addr(), "/v1/agent/services")
        .json()
        .get("batman/pg0")
        .is_none());
    let r = put(s.addr(), "/v1/agent/service/deregister/batman/pg0", b"");
    if s.is_real() {
        // 1.8.7 looks the service up only under ACLs; newer Consul always
        // does (version difference, SPEC.md §8.2).
        assert_eq!((r.status, r.text().as_str()), (200, ""));
    } else {
        assert_eq!(r.status, 404);
        assert_eq!(
            r.text(),
            "Unknown service ID \"batman/pg0\". Ensure that the service ID is passed, not the service name."
        );
    }
}
both!(service_deregister_takes_ids_with_slashes_and_404s_unknown_ids);

fn health_service_without_instances_is_an_empty_array(s: &Backend) {
    let r = get(s.addr(), "/v1/health/service/none?passing=1");
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert!(r.index() >= 1);
}
both!(health_service_without_instances_is_an_empty_array);

/// A health read reports the services table's index: any service
/// registration moves it, KV writes and sessions do not.
fn health_service_index_is_the_services_table_index(s: &Backend) {
    let before = get(s.addr(), "/v1/health/service/none").index();
    s.kv_put("k", b"v");
    create_session(s, json!({}));
    assert_eq!(get(s.addr(), "/v1/health/service/none").index(), before);
    let r = put(
        s.addr(),
        "/v1/agent/service/register",
        br#"{"name": "other"}"#,
    );
    assert_eq!(r.status, 200);
    wait_for_some(
        "the registration to move the services index",
        Duration::from_secs(10),
        || (get(s.addr(), "/v1/health/service/none").index() > before).then_some(()),
    );
}
both!(health_service_index_is_the_services_table_index);

fn status_leader_is_a_json_string(s: &Backend) {
    let r = get(s.addr(), "/v1/status/leader");
    assert_eq!(r.status, 200);
    assert!(r.json().as_str().is_some_and(|v| !v.is_empty()));
}
both!(status_leader_is_a_json_string);

// ------------------------------------------------------------------ §3.8 ACL

/// ACLs on, `default_policy = deny`, one all-powerful token (the real
/// agent's master token).
fn acl_options() -> Options {
    Options {
        acl_token: Some("s3cret".to_string()),
        ..Options::default()
    }
}

fn acl_request_without_token_is_403_permission_denied(s: &Backend) {
    for (m, t) in [
        ("GET", "/v1/kv/service/b/leader"),
        ("PUT", "/v1/kv/service/b/leader"),
        ("DELETE", "/v1/kv/service/b/leader"),
        ("PUT", "/v1/session/create"),
        ("GET", "/v1/agent/self"),
    ] {
        let r = request(s.addr(), m, t, &[], b"");
        assert_eq!(r.status, 403, "{m} {t}");
        assert!(
            r.text().starts_with("Permission denied"),
            "{m} {t}: {}",
            r.text()
        );
    }
    assert!(s.kv_get("service/b/leader").is_none());
}
both!(
    acl_request_without_token_is_403_permission_denied,
    acl_options()
);

fn acl_unknown_token_is_403_acl_not_found(s: &Backend) {
    let r = request(
        s.addr(),
        "GET",
        "/v1/kv/k",
        &[("X-Consul-Token", "wrong")],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    let r = get(s.addr(), "/v1/kv/p/?recurse&token=wrong");
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
}
both!(acl_unknown_token_is_403_acl_not_found, acl_options());

fn acl_token_is_accepted_from_header_bearer_and_query(s: &Backend) {
    assert_eq!(
        request(
            s.addr(),
            "PUT",
            "/v1/kv/k",
            &[("X-Consul-Token", "s3cret")],
            b"v"
        )
        .text(),
        "true"
    );
    let r = request(
        s.addr(),
        "GET",
        "/v1/kv/k",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(s.addr(), "/v1/kv/k?token=s3cret").status, 200);
    // Sent since Consul 1.9 (version difference, SPEC.md §8.2).
    let policy = if s.is_real() { None } else { Some("deny") };
    assert_eq!(r.header("X-Consul-Default-ACL-Policy"), policy);
}
both!(
    acl_token_is_accepted_from_header_bearer_and_query,
    acl_options()
);

fn acl_anonymous_recurse_is_filtered_to_404(s: &Backend) {
    s.kv_put("p/a", b"1");
    let r = get(s.addr(), "/v1/kv/p/?recurse");
    assert_eq!(r.status, 404);
    assert!(r.index() >= 1);
    // `?keys` lists only permitted keys: none for anonymous, so a prefix
    // is a 404 and the root an empty list.
    let r = get(s.addr(), "/v1/kv/p/?keys");
    assert_eq!((r.status, r.text().as_str()), (404, ""));
    let r = get(s.addr(), "/v1/kv/?keys");
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
}
both!(acl_anonymous_recurse_is_filtered_to_404, acl_options());

// ----------------------------------------------------------- §4 watches

/// A watch handler that appends `$CONSUL_INDEX <stdin>` to `log`.
fn recorder(dir: &Path) -> (Vec<String>, std::path::PathBuf) {
    let log = dir.join("calls.log");
    let script = dir.join("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nin=$(cat)\nprintf '%s %s\\n' \"$CONSUL_INDEX\" \"$in\" >> '{}'\n",
            log.display()
        ),
    )
    .expect("write script");
    (
        vec!["/bin/sh".to_string(), script.display().to_string()],
        log,
    )
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// Double-only: the watch runner (`Options::watches`) is the double's own
// stand-in for an agent `watches` entry; a real agent takes watches from its
// config, not from these Options.
#[test]
fn watch_runs_at_start_with_null_then_with_the_new_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (argv, log) = recorder(dir.path());
    let s = Server::start(Options {
        watches: vec![("service/b/leader".to_string(), argv)],
        ..Options::default()
    })
    .expect("start double");
    let first = wait_for_some(
        "the watch handler's first run",
        Duration::from_secs(10),
        || log_lines(&log).first().cloned(),
    );
    assert_eq!(first, format!("{} null", s.index()));
    put(s.addr(), "/v1/kv/service/b/leader", b"node1");
    let second = wait_for_some(
        "the watch handler's run after the PUT",
        Duration::from_secs(10),
        || log_lines(&log).get(1).cloned(),
    );
    let mi = s.kv_get("service/b/leader").expect("leader").modify_index;
    assert_eq!(
        second,
        format!("{mi} {{\"Key\":\"service/b/leader\",\"CreateIndex\":{mi},\"ModifyIndex\":{mi},\"LockIndex\":0,\"Flags\":0,\"Value\":\"bm9kZTE=\",\"Session\":\"\"}}")
    );
    // A no-op PUT and writes elsewhere do not re-run it; the next change does.
    put(s.addr(), "/v1/kv/service/b/leader", b"node1");
    put(s.addr(), "/v1/kv/service/b/other", b"x");
    delete(s.addr(), "/v1/kv/service/b/leader");
    let third = wait_for_some(
        "the watch handler's run after the DELETE",
        Duration::from_secs(10),
        || log_lines(&log).get(2).cloned(),
    );
    assert!(third.ends_with(" null"), "{third}");
    assert_eq!(log_lines(&log).len(), 3, "{:?}", log_lines(&log));
}

// Double-only: the double's watch runner (see above).
#[test]
fn watch_handler_that_ignores_stdin_does_not_block_the_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ran.log");
    let s = Server::start(Options {
        watches: vec![(
            "big".to_string(),
            vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                format!("echo ran >> '{}'", log.display()),
            ],
        )],
        ..Options::default()
    })
    .expect("start double");
    // The first run (key absent, `null`) must be seen before the change,
    // or the watch's first read may already see the value and run only once.
    wait_for_some("the first handler run", Duration::from_secs(10), || {
        (!log_lines(&log).is_empty()).then_some(())
    });
    // Larger than a pipe buffer, so a naive write-then-wait would block.
    s.kv_put("big", &vec![b'a'; 300 * 1024]);
    wait_for_some("two handler runs", Duration::from_secs(10), || {
        (log_lines(&log).len() >= 2).then_some(())
    });
    s.kv_put("big", &vec![b'b'; 300 * 1024]);
    wait_for_some("a third handler run", Duration::from_secs(10), || {
        (log_lines(&log).len() >= 3).then_some(())
    });
}

/// A slow Consul for fault tests (not a Consul feature): while the delay file
/// holds a duration, requests are answered and watches look that much later;
/// the file is read at each request, so removing it ends the delay.
// Double-only: the delay file is a fault-injection switch, not a Consul feature.
#[test]
fn delay_file_slows_answers_and_watches_while_it_holds_a_duration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (argv, log) = recorder(dir.path());
    let delay_file = dir.path().join("delay");
    let s = Server::start(Options {
        watches: vec![("slow/k".to_string(), argv)],
        delay_file: Some(delay_file.clone()),
        ..Options::default()
    })
    .expect("start double");
    wait_for_some(
        "the watch handler's first run",
        Duration::from_secs(10),
        || log_lines(&log).first().cloned(),
    );

    std::fs::write(&delay_file, "700ms\n").expect("write delay file");
    let started = Instant::now();
    assert_eq!(put(s.addr(), "/v1/kv/slow/k", b"v1").text(), "true");
    let put_took = started.elapsed();
    assert!(
        put_took >= Duration::from_millis(700),
        "PUT took {put_took:?}"
    );
    let r = get(s.addr(), "/v1/kv/slow/k");
    assert_eq!(entry(&r)["Value"], "djE=");
    // The PUT was applied after its delay, the watch looked after its own.
    wait_for_some(
        "the watch handler's run after the PUT",
        Duration::from_secs(10),
        || log_lines(&log).get(1).cloned(),
    );
    let watch_took = started.elapsed();
    assert!(
        watch_took >= Duration::from_millis(1400),
        "the handler ran {watch_took:?} after the PUT was sent"
    );

    // Removed: answered at once again (a 10-minute delay would outlast the
    // client's 60 s read timeout). A value that is no duration is no delay.
    std::fs::write(&delay_file, "10m").expect("write delay file");
    std::fs::remove_file(&delay_file).expect("remove delay file");
    assert_eq!(get(s.addr(), "/v1/kv/slow/k").status, 200);
    std::fs::write(&delay_file, "soon").expect("write delay file");
    assert_eq!(get(s.addr(), "/v1/kv/slow/k").status, 200);
}

// ----------------------------------------------------------- lifecycle

// Double-only: the double's in-process API itself.
#[test]
fn direct_state_access_matches_http() {
    let s = double();
    let i0 = s.index();
    s.kv_put("d", b"v");
    assert_eq!(s.index(), i0 + 1);
    let e = s.kv_get("d").expect("d");
    assert_eq!(
        (e.key.as_str(), e.value.as_slice(), e.flags),
        ("d", &b"v"[..], 0)
    );
    assert_eq!(
        entry(&get(s.addr(), "/v1/kv/d"))["ModifyIndex"],
        e.modify_index
    );
    s.kv_delete("d");
    assert_eq!(get(s.addr(), "/v1/kv/d").status, 404);
    assert!(s.url().starts_with("http://127.0.0.1:"));
}

// Double-only: the double's lifecycle (a real agent is a process).
#[test]
fn stop_closes_the_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let s = Server::start_on(listener, Options::default()).expect("start_on");
    let addr = s.addr();
    assert_eq!(get(addr, "/v1/status/leader").status, 200);
    s.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "port still open after stop"
    );
}

// Double-only: the double's lifecycle.
#[test]
fn drop_closes_the_port_even_with_a_parked_blocking_query() {
    let s = double();
    let addr = s.addr();
    s.kv_put("w", b"v");
    let mi = s.kv_get("w").expect("w").modify_index;
    let waiter = std::thread::spawn(move || {
        use std::io::{Read, Write};
        // The drop may win the race to connect; then there is nothing to wait for.
        let Ok(mut c) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let _ = c.write_all(
            format!("GET /v1/kv/w?index={mi}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
    });
    drop(s);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "port still open after drop"
    );
    waiter
        .join()
        .expect("waiter ends when the server drops its connection");
}

// ----------------------------------------------------------- the binary

// Double-only: the consul-double binary.
#[test]
fn binary_serves_until_sigterm() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_consul-double"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--session-ttl-min",
            "1s",
            "--acl-token",
            "t",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn consul-double");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read banner");
    let url = line
        .trim()
        .strip_prefix("consul-double: listening on http://")
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
    let addr: std::net::SocketAddr = url.parse().expect("address in banner");
    let r = request(
        addr,
        "PUT",
        "/v1/session/create?token=t",
        &[],
        br#"{"TTL":"1s"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(get(addr, "/v1/kv/k").status, 403);
    // SAFETY: signalling the child we spawned, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for_some(
        "consul-double to exit after SIGTERM",
        Duration::from_secs(10),
        || child.try_wait().expect("try_wait"),
    );
    assert!(status.success(), "exit status {status}");
}
