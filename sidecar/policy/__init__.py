"""The node's own policy in the network's metadata: is it registered under its stable addresses?"""
