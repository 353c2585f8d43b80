"""The lab as one program. scripts/lab.sh brings a lab up and takes it down
(network namespaces, Consul, Patroni, PgBouncer: bash, its `ip netns`
commands the topology's specification); everything else is this package,
run through scripts/lab/labtool.py. A module per concern:

  base        paths, LabError, bounded waits, signals and processes
  topology    scripts/lab/topology.env, the one definition of the layout
  netns       entering a namespace on a thread; the VIP's holders (netlink)
  dcs         reading Consul (the double or real) and etcd
  runlab      one running lab: its files, pids, DCS; up and down around a
              scenario (lab_session); a healthy cluster; status; the real
              Consul agents' configurations
  measure     load and sampling: the one load generator (writes, and the
              fault matrix's reads), the one sampler (VIP holders, leader
              key, pgbouncer.ini, PgBouncer's pause) and its end-state
              tracer, and the probes run as processes around an action
  events      switchover, failover, kill-patroni, stop-primary; run_event()
  analysis    an event's timeline and figures from its logs
  reports     the demo's and bench's rows and table; target/lab-<name>.json, .md
  faults      the fault matrix
  scenarios   demo and bench; SCENARIOS, which also names faults, backup,
              adopt-single and adopt-cluster
  backup      pgBackRest in the lab and the backup scenario
  adopt       the adopt-single and adopt-cluster scenarios
  checks      what backup and adopt share: recorded checks, SQL, outages
  cli         the commands (main), and the internal ones lab.sh and the
              probes run
"""
