# ACL policy of patroni-hook's token on the database nodes
# (/etc/patroni-hook/consul.token, consul.token_file; also the token of the
# agent's watches in consul-client.json there). Apply it once, on any agent:
#   consul acl policy create -name patroni-hook-db-postgres -rules @consul-acl-hook-db.hcl
#   consul acl token create -description "patroni-hook on pg-patroni1" -policy-name patroni-hook-db-postgres
# Replace "service/postgres/" with "<namespace>/<scope>/" of your cluster.
#
# What the hook does in Consul on a database node (src/keys.rs names every
# key; the callbacks, reconcile and before-stop all read through it):
# - reads <ns>/<scope>/ recursively: leader, members/, failover, floating-ip,
#   vip-holder, pause-request and pause-ack/ (src/vip.rs, src/before_stop.rs;
#   the watches read leader, failover and pause-request):
key_prefix "service/postgres/" {
  policy = "read"
}
# - writes and deletes vip-holder, check-and-set (src/vip.rs, src/apply.rs):
key "service/postgres/vip-holder" {
  policy = "write"
}
# - before-stop writes pause-request; a later run on the node that asked
#   deletes it, check-and-set (src/before_stop.rs, src/vip.rs):
key "service/postgres/pause-request" {
  policy = "write"
}
# Nothing else: it never writes Patroni's keys, a pause-ack, or anything
# outside the scope; no session, service or node rights.
