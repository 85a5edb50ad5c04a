# Seed 001's first echo server (one recv, send it back stripped, close), ported as-is to take
# its port from argv. Used by bench/compare.sh; its prints stay, they are part of its cost.
import socket
import sys

HOST = '127.0.0.1'
PORT = int(sys.argv[1])
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, PORT))
    s.listen()
    while True:
        conn, addr = s.accept()
        print('Connected by', addr)
        with conn:
            data = conn.recv(1024).strip()
            print("{} wrote:".format(addr))
            print(data)
            conn.sendall(data)
