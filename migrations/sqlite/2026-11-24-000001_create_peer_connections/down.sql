DROP TABLE peer_connections;
