"""Seed 004's file server (one request per connection, Content-Length, close), ported from
Python 2 to 3 (bytes) and to take the document root from argv. Used by bench/compare.sh."""

import os.path
import socket
import sys

DOCUMENT_ROOT = sys.argv[2] if len(sys.argv) > 2 else '/tmp'
RESPONSE_TEMPLATE = b"HTTP/1.1 200 OK\nContent-Length: %d\n\n%s"


def main():
    """Main entry point for script."""
    listen_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listen_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen_socket.bind(('127.0.0.1', int(sys.argv[1])))
    listen_socket.listen(1)

    while True:
        connection, address = listen_socket.accept()
        request = connection.recv(1024)
        start_line = request.split(b'\n')[0]
        method, uri, version = start_line.split()
        path = DOCUMENT_ROOT + uri.decode()
        if not os.path.exists(path):
            connection.sendall(b'HTTP/1.1 404 Not Found\n')
        else:
            with open(path, 'rb') as file_handle:
                file_contents = file_handle.read()
                response = RESPONSE_TEMPLATE % (len(file_contents), file_contents)
                connection.sendall(response)
        connection.close()


if __name__ == '__main__':
    sys.exit(main())
