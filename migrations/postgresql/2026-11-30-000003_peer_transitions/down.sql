DROP TABLE peer_transitions;
