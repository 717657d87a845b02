# Example EdgeLake entry script used by the README's quick start (a stand-in for the real repo).
set node_name = demo-node
process !local_scripts/local_script.al
