# ACL policy of Patroni's token (patroni.yml consul.token), one token per
# database node or one for all three. Apply it once, on any agent:
#   consul acl policy create -name patroni-postgres -rules @consul-acl-patroni.hcl
#   consul acl token create -description "Patroni on pg-patroni1" -policy-name patroni-postgres
# Replace "service/postgres/" with "<namespace>/<scope>/" of your cluster
# and "pg-patroni" with the prefix of your database nodes' Consul node names.
#
# What Patroni 4 does in Consul (patroni/dcs/consul.py), and the rule for it:
# - reads every key under <ns>/<scope>/ in one recursive read, writes the
#   leader lock, members/<name>, failover, config, sync, status, history,
#   initialize and failsafe, deletes them (`patronictl remove`: all of them):
key_prefix "service/postgres/" {
  policy = "write"
}
# - creates and renews its session on the local agent's node (session.create,
#   session.renew; the session belongs to the agent's node name):
session_prefix "pg-patroni" {
  policy = "write"
}
# - register_service: true registers (and deregisters) the service named
#   after the scope on the local agent, with an HTTP check on its REST API:
service "postgres" {
  policy = "write"
}
# Nothing else: no agent:read (Patroni asks /v1/agent/self only after Consul
# refused its session TTL, to learn the minimum), no other keys.
