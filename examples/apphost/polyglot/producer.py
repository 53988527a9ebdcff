"""The demo's Python producer: publishes tasks to RabbitMQ with pika, as a
Python service of an Aspire application does.

Environment: ConnectionStrings__messaging (amqp://user:password@host:port,
what an AppHost injects for .WithReference(messaging)).

    python3 producer.py COUNT PREFIX

publishes COUNT persistent JSON messages {"task": i} with message ids
PREFIX-0 ... to the "tasks" queue, through the default exchange, waiting
for the broker's confirms, and prints one line. The queue is declared
durable=True, as amqplib's assertQueue and goaspire's rabbitmq.Queue
declare it by default (pika's default is durable=False: the broker refuses
a declaration that differs from the existing queue's).
"""

import json
import os
import sys

import pika


def main():
    count, prefix = int(sys.argv[1]), sys.argv[2]
    params = pika.URLParameters(os.environ["ConnectionStrings__messaging"])
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.queue_declare("tasks", durable=True)
        ch.confirm_delivery()
        for i in range(count):
            ch.basic_publish(
                exchange="",
                routing_key="tasks",
                body=json.dumps({"task": i}),
                properties=pika.BasicProperties(
                    delivery_mode=2,  # persistent
                    content_type="application/json",
                    message_id=f"{prefix}-{i}",
                ),
            )
    print(f"published {count} tasks to the tasks queue")


if __name__ == "__main__":
    main()
