"""Start the `milvus` package's standalone Milvus server bound to 127.0.0.1 on the given ports.

Run with the standins environment's python:
    python milvus_standalone.py DATA_DIR PROXY_PORT ETCD_CLIENT_PORT ETCD_PEER_PORT

`milvus-server` cannot move the embedded etcd off 2379/2380 nor keep components from advertising
the machine's address, so two test sessions (or a developer's own Milvus) would collide. This
launcher uses the package's own MilvusServer with two template edits: every component's `ip` is
127.0.0.1 and the embedded etcd reads a config file with our ports.
"""

import os
import socket
import sys

from milvus import MilvusServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    data_dir, proxy_port, etcd_port, peer_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(data_dir, exist_ok=True)
    etcd_config = os.path.join(data_dir, "etcd.yaml")
    with open(etcd_config, "w", encoding="utf-8") as handle:
        handle.write(
            "name: default\n"
            f"data-dir: {os.path.join(data_dir, 'etcd.data')}\n"
            f"listen-client-urls: http://127.0.0.1:{etcd_port}\n"
            f"advertise-client-urls: http://127.0.0.1:{etcd_port}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer_port}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer_port}\n"
        )
    server = MilvusServer()
    server.set_base_dir(data_dir)
    server.config.set("proxy_port", proxy_port)
    server.config.set("etcd_port", etcd_port)
    for key in ("root_coord_port", "proxy_internal_port", "query_coord_port", "query_node_port",
                "index_coord_port", "index_node_port", "data_coord_port", "data_node_port"):
        server.config.set(key, free_port())
    server.webservice_port = free_port()
    text = server.config.template_text
    text = text.replace("  ip: #", "  ip: 127.0.0.1 #")
    text = text.replace("  use:\n    embed: true", f"  config:\n    path: {etcd_config}\n  use:\n    embed: true", 1)
    server.config.template_text = text
    server.start()
    print(f"milvus ready on 127.0.0.1:{proxy_port}", flush=True)
    server.wait()


if __name__ == "__main__":
    main()
