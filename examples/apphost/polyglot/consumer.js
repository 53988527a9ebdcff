// The demo's Node.js service: consumes the "tasks" queue with amqplib, as
// a Node worker of an Aspire application does, and serves its health and
// what it consumed with express.
//
// Environment (what an AppHost injects for
// builder.AddNpmApp("tasks-node", ...).WithReference(messaging).WithHttpEndpoint(env: "PORT")):
//
//   ConnectionStrings__messaging  amqp://user:password@host:port (or MESSAGING_URI, Aspire 13)
//   PORT                          the HTTP port
//
// GET /health answers 200 once the consumer is registered with the broker,
// 503 before; GET /received lists the messages consumed. Each message is
// also logged on stdout. SIGTERM stops it cleanly.
//
// The queue is asserted with amqplib's defaults: durable, as goaspire's
// rabbitmq.Queue and the Python producer's queue_declare('tasks',
// durable=True) declare it (pika's own default, durable=False, would be
// refused with PRECONDITION_FAILED by a broker that has the durable queue).
'use strict';

const amqp = require('amqplib');
const express = require('express');

const url = process.env.ConnectionStrings__messaging || process.env.MESSAGING_URI;
const port = Number(process.env.PORT || 0);
const queue = 'tasks';
const received = [];
let ready = false;
let conn;

const app = express();
app.get('/health', (req, res) => res.status(ready ? 200 : 503).send(ready ? 'Healthy' : 'Unhealthy'));
app.get('/received', (req, res) => res.json({ count: received.length, messages: received }));

async function consume() {
  conn = await amqp.connect(url);
  conn.on('error', (err) => console.error('amqp connection error:', err.message));
  const ch = await conn.createChannel();
  await ch.assertQueue(queue);
  await ch.prefetch(10);
  await ch.consume(queue, (msg) => {
    const m = {
      id: msg.properties.messageId || '',
      body: msg.content.toString('utf8'),
      redelivered: msg.fields.redelivered,
      traceparent: (msg.properties.headers || {}).traceparent || '',
    };
    received.push(m);
    console.log(`consumed ${m.id} ${m.body}`);
    ch.ack(msg);
  });
  ready = true;
  console.log(`consuming ${queue}`);
}

const server = app.listen(port, '127.0.0.1', () => console.log(`listening on ${server.address().port}`));
consume().catch((err) => {
  // The message only: an error of amqplib's can hold the URL.
  console.error('consumer failed:', err.message.replace(/\/\/[^@/]*@/g, '//***@'));
  process.exit(1);
});

process.on('SIGTERM', async () => {
  ready = false;
  try {
    if (conn) await conn.close();
  } catch (err) {
    console.error('closing the connection:', err.message); // already closed by the broker
  }
  server.close(() => process.exit(0));
  server.closeIdleConnections(); // Node 18 leaves them to time out
});
