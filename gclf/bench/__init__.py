"""Measurements that print numbers: model speed, the input pipeline, faces, the service, re-crops, fault recovery."""
