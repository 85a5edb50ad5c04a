# python3
#
# Seed 000's client ("Writing Web Server in Python: sockets"), verbatim except that the port
# comes from the first argument (default 6543, the seed's), so the tests can point it at a
# `tincan echo --framing close` on a free port.

import socket
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 6543

# Create client socket.
client_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# Connect to server (replace 127.0.0.1 with the real server IP).
client_sock.connect(('127.0.0.1', PORT))

# Send some data to server.
client_sock.sendall(b'Hello, world')
client_sock.shutdown(socket.SHUT_WR)

# Receive some data back.
chunks = []
while True:
    data = client_sock.recv(2048)
    if not data:
        break
    chunks.append(data)
print('Received', repr(b''.join(chunks)))

# Disconnect from server.
client_sock.close()
