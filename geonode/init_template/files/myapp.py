"""A starter Flask app served by geonode (see node.json: path "/")."""

from flask import Flask, jsonify, render_template

app = Flask(__name__)


@app.route("/")
def home():
    return render_template("index.html", message="Hello from geonode")


@app.route("/api/ping")
def ping():
    return jsonify(pong=True)
