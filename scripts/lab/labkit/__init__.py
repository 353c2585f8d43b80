"""The lab as one program (scripts/lab.sh brings a lab up and takes it down;
everything else is here). Its entry point is scripts/lab/labtool.py."""
