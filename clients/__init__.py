"""Clients and developer tools that talk to a running voxmesh, apart from the runtime services."""
