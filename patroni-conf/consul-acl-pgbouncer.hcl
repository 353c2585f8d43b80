# ACL policy of patroni-hook's token on the PgBouncer host
# (/etc/patroni-hook/consul.token, consul.token_file; also the token of the
# agent's watches in consul-client.json there). Apply it once, on any agent:
#   consul acl policy create -name patroni-hook-pgbouncer -rules @consul-acl-pgbouncer.hcl
#   consul acl token create -description "patroni-hook on pgbouncer" -policy-name patroni-hook-pgbouncer
# Replace "service/postgres/" with "<namespace>/<scope>/" and "pgbouncer"
# with the host's `name` (patroni-hook-pgbouncer.yml; default: the host
# name); one read rule per scope in pgbouncer.clusters.
#
# What reconcile does in Consul on a PgBouncer host (src/keys.rs names
# every key; src/pgbouncer_host.rs, src/pause_host.rs):
# - reads <ns>/ recursively and keeps the scopes of pgbouncer.clusters; Consul
#   leaves out of that read the keys this token may not read, so only the
#   scopes named here are seen (the watches read leader, failover and
#   pause-request of the same scope):
key_prefix "service/postgres/" {
  policy = "read"
}
# - confirms a pause as pause-ack/<name> and deletes it at RESUME:
key "service/postgres/pause-ack/pgbouncer" {
  policy = "write"
}
# - deletes a pause-request that outlived its pause, check-and-set:
key "service/postgres/pause-request" {
  policy = "write"
}
# Nothing else: it never writes Patroni's keys or vip-holder; no session,
# service or node rights.
