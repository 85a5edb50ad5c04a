# Seed 003's web server (greets the client, quotes its request line; HTTP/1.0, body until
# close), ported from Python 2 to 3 (bytes, a buffered file object) and to take its port from
# argv. Used by bench/compare.sh.
import socket
import sys

host = '127.0.0.1'
port = int(sys.argv[1])
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind((host, port))
c.listen(1)
while 1:
    csock, caddr = c.accept()
    cfile = csock.makefile('rw')
    line = cfile.readline().strip()
    cfile.write('HTTP/1.0 200 OK\n\n')
    cfile.write('<html><head><title>Welcome %s!</title></head>' % (str(caddr)))
    cfile.write('<body><h1>Follow the link...</h1>')
    cfile.write('All the server needs to do is ')
    cfile.write('to deliver the text to the socket. ')
    cfile.write('It delivers the HTML code for a link, ')
    cfile.write('and the web browser converts it. <br><br><br><br>')
    cfile.write('<font size="7"><center> <a href="http://python.about.com/index.html">Click me!</a> </center></font>')
    cfile.write('<br><br>The wording of your request was: "%s"' % (line))
    cfile.write('</body></html>')
    cfile.close()
    csock.close()
