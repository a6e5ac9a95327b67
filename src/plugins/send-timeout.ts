// HTTP_SEND_TIMEOUT_MS for non-streamed answers (docs/security.md): a client that takes none of a response for that
// long is disconnected, as nginx's send_timeout does. Streams have their own (serving/sse.ts).

import type { Socket } from 'node:net';
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';

export default fp(
  async function sendTimeoutPlugin(fastify: FastifyInstance, opts: { ms: number }) {
    // A large answer to a client that stopped reading must not hold its socket and memory for ever. The timeout is the
    // socket's idle timeout, which counts a write the client is still taking as activity and, with no 'timeout'
    // listener, destroys the socket (Node's http server). Set only as the answer goes out (before, a non-streamed
    // request waits silently for its generation), on the socket it is given (a pipelined answer gets it later), and
    // cleared before Node's own 'finish' handler, which sets the keep-alive timeout or hands the socket to the next
    // answer. `app.inject`'s mock socket has no timeouts, hence the check, as Node's own.
    const sendTimeout = (socket: Socket | null, ms: number) => {
      if (typeof socket?.setTimeout === 'function') socket.setTimeout(ms);
    };
    fastify.addHook('onSend', async (_req, reply, payload) => {
      const res = reply.raw;
      if (res.socket) sendTimeout(res.socket, opts.ms);
      else res.once('socket', (socket: Socket) => sendTimeout(socket, opts.ms));
      res.prependOnceListener('finish', () => sendTimeout(res.socket, 0));
      return payload;
    });
  },
  { name: 'send-timeout' },
);
