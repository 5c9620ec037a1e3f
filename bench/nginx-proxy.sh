# Sourced by bench/gateway.sh, bench/gateway-instr.sh and scripts/pgo.sh (the training).
#
# stage_files HOST: in the current directory (a fresh one, in a mount namespace of our own),
# HOST resolving to 127.0.0.1 (./hosts bound over /etc/hosts, in this namespace only), www/small
# (100 B) and tmp/, and an ECDSA P-256 certificate for HOST (cert.pem, key.pem).
stage_files() {
  local host="$1"
  echo "127.0.0.1 localhost $host" >hosts
  mount --bind "$PWD/hosts" /etc/hosts
  mkdir -p www tmp
  head -c 100 /dev/zero | tr '\0' x >www/small
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$host" \
    -addext "subjectAltName=DNS:$host" -keyout key.pem -out cert.pem 2>/dev/null
}

# nginx_upstream_conf WORK_DIR: the configuration of the upstream every proxy forwards to —
# nginx, one worker, serving WORK_DIR/www on 127.0.0.1:8080, access log off, keep-alive without
# a request cap. WORK_DIR holds tmp/.
nginx_upstream_conf() {
  local work="$1"
  cat <<EOF
user root; worker_processes 1; daemon off; pid $work/upstream.pid; error_log $work/upstream.err warn;
events { worker_connections 8192; }
http {
  client_body_temp_path $work/tmp/b; proxy_temp_path $work/tmp/p; fastcgi_temp_path $work/tmp/f;
  uwsgi_temp_path $work/tmp/u; scgi_temp_path $work/tmp/s;
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 10000000; keepalive_timeout 300s;
  default_type application/octet-stream;
  server { listen 127.0.0.1:8080; root $work/www; }
}
EOF
}

# nginx_proxy_http WORK_DIR PORT: the `http` block of nginx as the TLS reverse proxy the gateway
# is compared with, the same in both benchmarks (one upstream with `keepalive 128`, the
# forwarding headers the gateway also sends, no temp files). WORK_DIR holds cert.pem, key.pem
# and tmp/.
nginx_proxy_http() {
  local work="$1" port="$2"
  cat <<EOF
http {
  client_body_temp_path $work/tmp/b; proxy_temp_path $work/tmp/p; fastcgi_temp_path $work/tmp/f;
  uwsgi_temp_path $work/tmp/u; scgi_temp_path $work/tmp/s;
  access_log off;
  keepalive_requests 10000000; keepalive_timeout 75s;
  upstream backend { server 127.0.0.1:8080; keepalive 128; }
  server {
    listen 127.0.0.1:$port ssl http2;
    server_name bench.example;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_max_temp_file_size 0;
    }
  }
}
EOF
}
