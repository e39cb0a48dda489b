"""The wire contract nos shares with users and with the original nos: node labels and annotations
(``annotations``) and the pod rules that decide what nos plans (``pods``)."""
