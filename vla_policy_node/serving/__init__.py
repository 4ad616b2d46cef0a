"""The model core served over the network (openpi's websocket protocol) and its wire format."""
