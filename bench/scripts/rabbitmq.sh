# Sourced by bench scripts: a private RabbitMQ node on 127.0.0.1 only, in a temporary directory.
#   rabbit_start   installs rabbitmq-server if missing, starts a node, sets RABBIT_PORT and RABBIT_PID
#   rabbit_stop    stops it and removes its directory (also run on exit)
# Nothing listens beyond 127.0.0.1: AMQP, Erlang distribution and epmd are bound to loopback, and no
# plugin (management) is enabled.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

rabbit_start() {
  if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "== installing rabbitmq-server (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  RABBIT_DIR=$(mktemp -d /tmp/tw-rabbit.XXXXXX)
  RABBIT_PORT=$(free_port)
  export RABBITMQ_NODENAME="twbench$$@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBIT_PORT
  export RABBITMQ_DIST_PORT=$(free_port)
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT=$(free_port)
  # Erlang distribution (node-to-node and CLI) on loopback and on the chosen port only.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -kernel inet_dist_listen_min $RABBITMQ_DIST_PORT -kernel inet_dist_listen_max $RABBITMQ_DIST_PORT"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia
  export RABBITMQ_LOG_BASE=$RABBIT_DIR/log
  export RABBITMQ_PID_FILE=$RABBIT_DIR/rabbit.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq
  echo "[]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
  # Defaults otherwise (Debian 12: RabbitMQ 3.10, classic queues).
  printf 'log.console = false\n' > "$RABBIT_DIR/rabbitmq.conf"
  echo "== starting RabbitMQ on 127.0.0.1:$RABBIT_PORT (data in $RABBIT_DIR)"
  /usr/lib/rabbitmq/bin/rabbitmq-server > "$RABBIT_DIR/server.out" 2>&1 &
  trap rabbit_stop EXIT
  # The node registers with epmd a moment after start; await_startup fails until then.
  local tries=0
  until /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_NODENAME" await_startup --timeout 60 >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ $tries -ge 90 ]; then
      echo "RabbitMQ did not start:"; tail -30 "$RABBIT_DIR/server.out"; return 1
    fi
    sleep 1
  done
  RABBIT_PID=$(cat "$RABBITMQ_PID_FILE")
  echo "== RabbitMQ $(/usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_NODENAME" version 2>/dev/null) up, beam.smp pid $RABBIT_PID"
}

rabbit_stop() {
  if [ -n "${RABBIT_DIR:-}" ] && [ -d "$RABBIT_DIR" ]; then
    echo "== stopping RabbitMQ"
    /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_NODENAME" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || { [ -n "${RABBIT_PID:-}" ] && kill "$RABBIT_PID" 2>/dev/null; }
    epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
    rm -rf "$RABBIT_DIR"
    RABBIT_DIR=
  fi
}
