"""The model core served over the network (openpi's websocket protocol; the wire format and the
observation keys it shares with the remote backend are models/wire.py and models/observation_keys.py)."""
