"""The chat client of "Learning Python Network Programming" ch. 8 (seed 002), as a test helper.

The protocol code (prep_msg, send_msg, parse_recvd_data, recv_msgs with its leftover `rest`) and
the two-thread shape (one thread sends, the main thread receives and prints) are the book's; only
the input is scripted instead of typed, so tests can check what every client receives.

usage: chat_client.py HOST PORT TAG COUNT EXPECT
  Connects, waits until the server announces this client ("* ADDR joined"), prints
  "ready ADDR", then waits for a line "go" on stdin. Its input thread then sends COUNT messages
  "TAG-0" ... while the main thread prints every message received, one per line, until EXPECT
  messages that are not server notices ("* ...") have arrived. Then it quits as the book's
  client does on 'q': shutdown both ways and close. Exit 0; 3 if the server closed first.
"""

import socket
import sys
import threading


def prep_msg(msg):
    """ Prepare a string to be sent as a message """
    msg += '\0'
    return msg.encode('utf-8')


def send_msg(sock, msg):
    """ Send a string over a socket, preparing it first """
    data = prep_msg(msg)
    sock.sendall(data)


def parse_recvd_data(data):
    """ Break up raw received data into messages, delimited by null byte """
    parts = data.split(b'\0')
    msgs = parts[:-1]
    rest = parts[-1]
    return (msgs, rest)


def recv_msgs(sock, data=bytes()):
    """ Receive data and break into complete messages on null byte
       delimiter. Block until at least one message received, then
       return received messages """
    msgs = []
    while not msgs:
        recvd = sock.recv(4096)
        if not recvd:
            raise ConnectionError()
        data = data + recvd
        (msgs, rest) = parse_recvd_data(data)
    msgs = [msg.decode('utf-8') for msg in msgs]
    return (msgs, rest)


def handle_input(sock, tag, count, go):
    """ The book's input thread, fed by a script instead of input() """
    go.wait()
    try:
        for i in range(count):
            send_msg(sock, '{}-{}'.format(tag, i))
    except (BrokenPipeError, ConnectionError):
        pass


def main():
    host, port, tag, count, expect = sys.argv[1:6]
    count, expect = int(count), int(expect)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect((host, int(port)))
    me = '{}:{}'.format(*sock.getsockname()[:2])

    rest = bytes()
    joined = False
    while not joined:
        (msgs, rest) = recv_msgs(sock, rest)
        joined = '* {} joined'.format(me) in msgs
    print('ready', me, flush=True)

    go = threading.Event()
    thread = threading.Thread(target=handle_input, args=[sock, tag, count, go], daemon=True)
    thread.start()
    if sys.stdin.readline().strip() != 'go':
        return 2
    go.set()

    seen = 0
    while seen < expect:
        try:
            (msgs, rest) = recv_msgs(sock, rest)
        except ConnectionError:
            print('Connection to server closed', flush=True)
            sock.close()
            return 3
        for msg in msgs:
            print(msg)
            if not msg.startswith('* '):
                seen += 1
    sys.stdout.flush()
    # The book's 'q': shut down both ways, then close.
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
