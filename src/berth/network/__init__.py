"""Networks: bridges, endpoints, IPAM, port publishing, DNS, firewall."""
