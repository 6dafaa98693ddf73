"""The per-node agent: joins the policy engine (`septum.operator.engine`) and the datapath
(`septum.dataplane`) on one node. Only `septum.agent.adapter` imports both sides."""
